"""The one pairing rule: the public datasets' own names, same stems, ambiguity, patterns, properties."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselcli.io.pairing import ANNOTATION_SUFFIXES, SPLIT_SUFFIXES, Index, PairingError, pair_files, pairing_key


def paths(*names: str) -> list[Path]:
    return [Path("/d") / n for n in names]


@pytest.mark.parametrize(
    "image, partners",
    [
        # DRIVE: image, 1st and 2nd observer, FOV mask (test and training splits).
        ("01_test.tif", ["01_manual1.gif", "01_manual2.gif", "01_test_mask.gif"]),
        ("21_training.tif", ["21_manual1.gif", "21_training_mask.gif"]),
        # CHASE_DB1: image, both observers, FOV.
        ("Image_01L.jpg", ["Image_01L_1stHO.png", "Image_01L_2ndHO.png", "Image_01L_mask.gif"]),
        # STARE: both observers.
        ("im0001.ppm", ["im0001.ah.ppm", "im0001.vk.ppm"]),
        # HRF: annotation has the image's own stem, FOV has _mask.
        ("01_h.jpg", ["01_h.tif", "01_h_mask.tif"]),
        ("15_dr.JPG", ["15_dr.tif", "15_dr_mask.tif"]),
        # Plain same-stem pairs, any case of extension.
        ("scan_0042.PNG", ["scan_0042.png", "SCAN_0042_gt.bmp", "scan_0042_seg.webp", "scan_0042_fov.png"]),
    ],
)
def test_public_dataset_names_share_a_key(image: str, partners: list[str]) -> None:
    for partner in partners:
        assert pairing_key(partner) == pairing_key(image), partner


def test_different_images_do_not_share_keys() -> None:
    names = ["01_test.tif", "02_test.tif", "Image_01L.jpg", "Image_01R.jpg", "im0001.ppm", "im0010.ppm", "01_h.jpg", "01_g.jpg"]
    assert len({pairing_key(n) for n in names}) == len(names)


def test_drive_folders_pair_one_to_one() -> None:
    images = paths(*(f"{i:02d}_test.tif" for i in range(1, 21)))
    truths = paths(*(f"{i:02d}_manual1.gif" for i in range(1, 21)))
    pairs, unpaired, errors = pair_files(images, truths)
    assert errors == {} and unpaired == []
    assert {i.name[:2]: t.name[:2] for i, t in pairs.items()} == {f"{i:02d}": f"{i:02d}" for i in range(1, 21)}


def test_unpaired_partners_are_returned_and_missing_images_are_left_out() -> None:
    pairs, unpaired, errors = pair_files(paths("a.png", "b.png"), paths("a_gt.png", "c_gt.png", "d.png"))
    assert pairs == {Path("/d/a.png"): Path("/d/a_gt.png")}
    assert unpaired == paths("c_gt.png", "d.png")
    assert errors == {}


def test_ambiguity_is_an_error_naming_every_candidate() -> None:
    # Both CHASE_DB1 observers in one folder: which one is the truth is not ours to guess.
    pairs, unpaired, errors = pair_files(paths("Image_01L.jpg"), paths("Image_01L_1stHO.png", "Image_01L_2ndHO.png"))
    assert pairs == {}
    message = errors[Path("/d/Image_01L.jpg")]
    assert "Image_01L_1stHO.png" in message and "Image_01L_2ndHO.png" in message and "pattern" in message
    with pytest.raises(PairingError):
        Index.of(paths("Image_01L_1stHO.png", "Image_01L_2ndHO.png")).find("Image_01L.jpg")


def test_a_pattern_names_the_partner_and_resolves_ambiguity() -> None:
    partners = paths("Image_01L_1stHO.png", "Image_01L_2ndHO.png", "scan-vessels.tif")
    index = Index.of(partners)
    assert index.find("Image_01L.jpg", "{stem}_2ndHO") == Path("/d/Image_01L_2ndHO.png")
    assert index.find("image_01l.jpg", "{stem}_1STHO") == Path("/d/Image_01L_1stHO.png")  # case-insensitive
    # A convention the key rule does not know.
    assert index.find("scan.png") is None
    assert index.find("scan.png", "{stem}-vessels") == Path("/d/scan-vessels.tif")
    # A pattern matches exact stems only: no suffix stripping behind the user's back.
    assert index.find("Image_01L.jpg", "{stem}") is None


def test_pattern_with_two_extensions_of_one_stem_is_ambiguous() -> None:
    with pytest.raises(PairingError, match="a_seg.png, a_seg.tif"):
        Index.of(paths("a_seg.png", "a_seg.tif")).find("a.png", "{stem}_seg")


@pytest.mark.data
def test_real_drive_and_chase_folders_pair_completely(drive_root: Path, chase_root: Path) -> None:
    for images, truths, fovs in [
        (drive_root / "test/images", drive_root / "test/1st_manual", drive_root / "test/mask"),
        (drive_root / "training/images", drive_root / "training/1st_manual", drive_root / "training/mask"),
        (chase_root / "images", chase_root / "1st_manual", chase_root / "fov"),
    ]:
        image_files = sorted(images.iterdir())
        for partners in (truths, fovs):
            pairs, unpaired, errors = pair_files(image_files, sorted(partners.iterdir()))
            assert (len(pairs), unpaired, errors) == (len(image_files), [], {}), partners


# --- properties -------------------------------------------------------------------------

KNOWN_SUFFIXES = ANNOTATION_SUFFIXES + SPLIT_SUFFIXES
EXTENSIONS = [".png", ".tif", ".gif", ".jpg", ".PPM", ".Tiff"]
# Stems a user might have: letters, digits, '_' and '-', but not ending in a suffix the rule
# strips (an image named 'x_gt.png' is itself read as an annotation of 'x': documented).
stems = st.text("abcXYZ019_-", min_size=1, max_size=12).filter(
    lambda s: not s.lower().endswith(KNOWN_SUFFIXES) and not s.startswith(".")
)


@settings(max_examples=200, deadline=None)
@given(stem=stems, suffix=st.sampled_from(ANNOTATION_SUFFIXES), split=st.sampled_from(("",) + SPLIT_SUFFIXES),
       ext1=st.sampled_from(EXTENSIONS), ext2=st.sampled_from(EXTENSIONS))
def test_annotation_and_split_suffixes_always_pair(stem: str, suffix: str, split: str, ext1: str, ext2: str) -> None:
    image = f"{stem}{split}{ext1}"
    assert pairing_key(image) == pairing_key(f"{stem}{suffix}{ext2}") == pairing_key(f"{stem}{split}{suffix}{ext2}")
    assert pairing_key(image) == pairing_key(f"{stem.upper()}{suffix.upper()}{ext2}")


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(stems, min_size=1, max_size=8, unique_by=str.lower), data=st.data())
def test_pairing_is_one_to_one_and_order_free(keys: list[str], data: st.DataObject) -> None:
    suffixes = data.draw(st.lists(st.sampled_from(("",) + ANNOTATION_SUFFIXES[:6]), min_size=len(keys), max_size=len(keys)))
    with_image = data.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    with_truth = data.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    images = [Path(f"/img/{k}.tif") for k, keep in zip(keys, with_image) if keep]
    truths = [Path(f"/gt/{k}{s}.png") for k, s, keep in zip(keys, suffixes, with_truth) if keep]
    pairs, unpaired, errors = pair_files(images, truths)
    assert errors == {}
    # Exactly the keys present on both sides pair, each with its own partner.
    both = {k.lower() for k, a, b in zip(keys, with_image, with_truth) if a and b}
    assert {pairing_key(i) for i in pairs} == both
    assert all(pairing_key(i) == pairing_key(t) for i, t in pairs.items())
    assert len(set(pairs.values())) == len(pairs)
    assert sorted(set(pairs.values()) | set(unpaired)) == sorted(truths)
    # Input order does not matter.
    shuffled_images, shuffled_truths = images[:], truths[:]
    random.Random(0).shuffle(shuffled_images)
    random.Random(1).shuffle(shuffled_truths)
    assert pair_files(shuffled_images, shuffled_truths) == (pairs, unpaired, errors)


@settings(max_examples=100, deadline=None)
@given(stem=stems, extra=st.sampled_from(("_1stHO", "_2ndHO", "_manual1", "_gt")))
def test_two_candidates_for_one_image_are_always_an_error(stem: str, extra: str) -> None:
    image = Path(f"/img/{stem}.jpg")
    pairs, _, errors = pair_files([image], [Path(f"/gt/{stem}.png"), Path(f"/gt/{stem}{extra}.png")])
    assert pairs == {} and image in errors
