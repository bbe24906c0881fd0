"""The test splits: one rule per dataset, and training never reads a test image."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.data import find_training_files
from vesselcli.protocols import evaluation_sets, is_chase_test


def test_chase_db1_test_split_is_children_11_to_14() -> None:
    assert [is_chase_test(Path(f"Image_{n:02d}{eye}.jpg")) for n in (1, 10, 11, 14) for eye in "LR"] == [False] * 4 + [True] * 4


def _chase_like(root: Path) -> Path:
    for folder in ("images", "1st_manual", "fov"):
        (root / folder).mkdir(parents=True)
    for n in range(1, 15):
        for eye in "LR":
            (root / "images" / f"Image_{n:02d}{eye}.jpg").write_bytes(b"")
            (root / "1st_manual" / f"Image_{n:02d}{eye}_1stHO.png").write_bytes(b"")
            (root / "fov" / f"Image_{n:02d}{eye}_mask.gif").write_bytes(b"")
    return root


def test_training_and_evaluation_split_chase_db1_the_same_way(tmp_path: Path) -> None:
    chase = _chase_like(tmp_path / "CHASE_DB1")
    training = {image.name for image, _, _ in find_training_files(chase)}
    (test_set,) = evaluation_sets(tmp_path)
    testing = {image.name for image in test_set.images}
    assert len(training) == 20 and len(testing) == 8
    assert training | testing == {p.name for p in (chase / "images").iterdir()} and not training & testing


@pytest.mark.data
def test_training_reads_no_test_image_of_the_public_data(drive_root: Path, chase_root: Path) -> None:
    training = {image.resolve() for root in (drive_root, chase_root) for image, _, _ in find_training_files(root)}
    testing = {image.resolve() for test_set in evaluation_sets(drive_root.parent) for image in test_set.images}
    assert len(training) == 40 and len(testing) == 48 and not training & testing
    names = {test_set.name: len(test_set.images) for test_set in evaluation_sets(drive_root.parent)}
    assert names == {"DRIVE": 20, "CHASE_DB1": 8, "DRIVE-512": 20}
