"""The test splits: one rule per dataset, and training never reads a test image."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.data import find_training_files
from vesselcli.io.protocols import evaluation_sets, is_chase_test


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


def test_the_int8_gate_trains_on_the_chase_db1_children_the_protocol_calls_training(tmp_path: Path, monkeypatch) -> None:
    from vesselcli.io import protocols
    from vesselcli.variants.gate import training_sets

    _chase_like(tmp_path / "CHASE_DB1")
    for folder in ("DRIVE/training/images", "DRIVE/training/mask", "HRF/images", "HRF/mask"):
        (tmp_path / folder).mkdir(parents=True)
    chase = {s.name: s for s in training_sets(tmp_path)}["CHASE_DB1 training"]
    assert len(chase.images) == 20 and not any(is_chase_test(p) for p in chase.images)
    monkeypatch.setattr(protocols, "CHASE_FIRST_TEST_CHILD", 12)  # one rule: moving it moves the gate too
    chase = {s.name: s for s in training_sets(tmp_path)}["CHASE_DB1 training"]
    assert len(chase.images) == 22


def test_every_reader_of_the_drive_test_split_takes_the_protocol_images_and_their_paired_masks(tmp_path: Path) -> None:
    import numpy as np

    from bench.gpu import drive_batch
    from bench.workloads import drive_images
    from segment_fakes import write_fundus, write_mask
    from vesselcli.export.onnx_export import drive_tiles
    from vesselcli.imaging.preprocess import Preprocessing
    from vesselcli.variants.gate import drive_test

    test = tmp_path / "DRIVE" / "test"
    disc = np.zeros((96, 110), bool)
    disc[8:88, 10:100] = True
    for n in (1, 2):  # PNG photographs, masks named as pair_files pairs them: not DRIVE's own *_test.tif
        write_fundus(test / "images" / f"{n:02d}_test.png", seed=n)
        write_mask(test / "mask" / f"{n:02d}_test_mask.png", disc)
        write_mask(test / "1st_manual" / f"{n:02d}_manual1.png", disc)
    expected = list(evaluation_sets(tmp_path)[0].images)
    assert [p.name for p in expected] == ["01_test.png", "02_test.png"]
    assert drive_images(tmp_path) == expected
    assert list(drive_test(tmp_path).images) == expected
    pre = Preprocessing(fov_diameter=80.0)
    assert drive_tiles(tmp_path / "DRIVE", pre, 32, images=2).shape[1:] == (1, 32, 32)
    assert drive_batch(tmp_path, pre, 3, 32).shape == (3, 1, 32, 32)
