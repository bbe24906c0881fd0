"""The public test protocols: which images are test images, scored against what, where.

One home for the split rules that training (which must never read a test image),
``python -m train.evaluate`` (the model card's figures) and ``make bench`` (BENCHMARKS.md)
all follow. Layouts are those of ``../shared/data`` (see its README):

- DRIVE: ``test/images`` (20) against ``test/1st_manual``, inside ``test/mask``; training
  uses ``training/`` only.
- CHASE_DB1: one folder for all 28 images; the common protocol trains on ``Image_01L`` ...
  ``Image_10R`` and tests on ``Image_11L`` ... ``Image_14R`` (child 11 onwards), against
  ``1st_manual``, inside ``fov``.
- DRIVE-512: not another test set but the 20 DRIVE test photographs squashed to 512x512
  (bilinear, annotation binarised at 127), as the seed project's report used them:
  ``test/images`` against ``test/masks``, scored over the whole image (no FOV masks).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS

#: CHASE_DB1 children numbered from this one on are the test split (Image_11L ... Image_14R).
CHASE_FIRST_TEST_CHILD = 11


@dataclass(frozen=True)
class EvaluationSet:
    """One protocol's test images, the folder of their annotations and of their FOV masks.

    ``fov_dir`` None: no FOV masks (detect them); ``whole_image``: the protocol scores the
    whole image, not only the FOV (DRIVE-512, the report's protocol).
    """

    name: str
    images: tuple[Path, ...]
    truth_dir: Path
    fov_dir: Path | None
    whole_image: bool


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by extension, hidden files left out), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def chase_child(image: Path) -> int:
    """The child's number in a CHASE_DB1 name: ``Image_11L.jpg`` -> 11 (0 when there is none)."""
    digits = "".join(ch for ch in Path(image).stem if ch.isdigit())
    return int(digits) if digits else 0


def is_chase_test(image: Path) -> bool:
    """True for the CHASE_DB1 test split (``Image_11L`` ... ``Image_14R``)."""
    return chase_child(image) >= CHASE_FIRST_TEST_CHILD


def evaluation_sets(data: Path) -> list[EvaluationSet]:
    """DRIVE (20), CHASE_DB1 (8) and DRIVE-512 (20) test sets, those present under ``data``."""
    data = Path(data)
    sets = []
    drive = data / "DRIVE" / "test"
    if drive.is_dir():
        sets.append(EvaluationSet("DRIVE", tuple(image_files(drive / "images")), drive / "1st_manual", drive / "mask", False))
    chase = data / "CHASE_DB1"
    if chase.is_dir():
        test = tuple(p for p in image_files(chase / "images") if is_chase_test(p))
        sets.append(EvaluationSet("CHASE_DB1", test, chase / "1st_manual", chase / "fov", False))
    drive512 = data / "DRIVE-512" / "test"
    if drive512.is_dir():
        sets.append(EvaluationSet("DRIVE-512", tuple(image_files(drive512 / "images")), drive512 / "masks", None, True))
    return sets


def drive_test_set(data: Path) -> EvaluationSet:
    """DRIVE's 20 test images (``evaluation_sets``' first); ``FileNotFoundError`` saying where it looked."""
    found = [s for s in evaluation_sets(data) if s.name == "DRIVE" and s.images]
    if not found:
        raise FileNotFoundError(f"no DRIVE test images in {Path(data) / 'DRIVE' / 'test' / 'images'}: "
                                "pass --data (or set VESSELSEG_DATA) pointing at the folder holding DRIVE/")
    return found[0]


def fov_masks(evaluation: EvaluationSet) -> dict[Path, Path]:
    """Each image's FOV mask file, paired by the product's one pairing rule (``pairing.pair_files``)."""
    from .pairing import pair_files

    if evaluation.fov_dir is None:
        return {}
    pairs, _, _ = pair_files(list(evaluation.images), sorted(p for p in evaluation.fov_dir.iterdir() if p.is_file()), None)
    return pairs
