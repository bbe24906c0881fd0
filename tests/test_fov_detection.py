"""Field-of-view detection on real photographs against the datasets' own FOV masks, and on
photographs made darker, brighter and cropped (what other cameras and exports do)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vesselcli.imaging.fov import brightness, detect_fov, fov_diameter
from vesselcli.io.imageio import read_image, read_mask

IOU_FLOOR = 0.95


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def drive_pairs(drive_root: Path) -> list[tuple[Path, Path]]:
    test = drive_root / "test"
    return [(test / "images" / f"{n:02d}_test.tif", test / "mask" / f"{n:02d}_test_mask.gif") for n in (1, 8, 15)]


def chase_pairs(chase_root: Path) -> list[tuple[Path, Path]]:
    return [(chase_root / "images" / f"Image_{s}.jpg", chase_root / "fov" / f"Image_{s}_mask.gif") for s in ("01L", "11R")]


@pytest.mark.data
@pytest.mark.parametrize("dataset", ["DRIVE", "CHASE_DB1"])
def test_detected_fov_matches_the_dataset_mask(dataset: str, drive_root: Path, chase_root: Path) -> None:
    pairs = drive_pairs(drive_root) if dataset == "DRIVE" else chase_pairs(chase_root)
    for image, mask in pairs:
        rgb = read_image(image)
        truth = read_mask(mask)
        found = detect_fov(rgb)
        assert found.shape == truth.shape
        assert iou(found, truth) >= IOU_FLOOR, (image.name, iou(found, truth))
        # the diameter, which sets the model scale, is within 3% of the mask's
        assert abs(fov_diameter(found) - fov_diameter(truth)) <= 0.03 * fov_diameter(truth)


@pytest.mark.data
@pytest.mark.parametrize("gain", [0.35, 1.8])
def test_detection_survives_dark_and_overexposed_photographs(gain: float, drive_root: Path) -> None:
    image, mask = drive_pairs(drive_root)[0]
    rgb = np.clip(read_image(image).astype(np.float32) * gain, 0, 255).astype(np.uint8)
    assert iou(detect_fov(rgb), read_mask(mask)) >= IOU_FLOOR - 0.03


@pytest.mark.data
def test_a_disc_cropped_at_top_and_bottom_keeps_its_width_as_diameter(chase_root: Path) -> None:
    image, mask = chase_pairs(chase_root)[0]
    rgb, truth = read_image(image), read_mask(mask)
    rows = np.flatnonzero(truth.any(axis=1))
    middle = (rows[0] + rows[-1]) // 2
    half = (rows[-1] - rows[0]) // 3  # keep the middle two thirds of the disc's height
    crop, crop_truth = rgb[middle - half : middle + half], truth[middle - half : middle + half]
    found = detect_fov(crop)
    assert iou(found, crop_truth) >= IOU_FLOOR
    assert abs(fov_diameter(found) - fov_diameter(truth)) <= 0.03 * fov_diameter(truth)


def test_a_photograph_without_dark_surround_is_all_fov() -> None:
    rgb = np.full((40, 50, 3), (180, 90, 40), np.uint8)
    assert detect_fov(rgb).all()


@pytest.mark.data
def test_a_large_photograph_is_searched_reduced_with_the_same_disc(chase_root: Path) -> None:
    import cv2

    from vesselcli.imaging import fov as fov_module

    rgb = read_image(chase_root / "images" / "Image_11R.jpg")
    truth = read_mask(chase_root / "fov" / "Image_11R_mask.gif")
    big = cv2.resize(rgb, (rgb.shape[1] * 3, rgb.shape[0] * 3), interpolation=cv2.INTER_LINEAR)
    big_truth = cv2.resize(truth.astype(np.uint8), (big.shape[1], big.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    assert max(big.shape[:2]) / fov_module.WORK_SIDE > 1.5  # the reduced path is the one taken
    reduced = detect_fov(big)
    full = fov_module._detect(big)  # the same search at full size, as it was before
    assert reduced.shape == big_truth.shape
    assert iou(reduced, full) >= 0.995
    assert iou(reduced, big_truth) >= IOU_FLOOR
    assert abs(fov_diameter(reduced) - fov_diameter(full)) <= 0.005 * fov_diameter(full)


def test_brightness_is_bit_for_bit_the_float_mean_rule(drive_root: Path) -> None:
    # What detection thresholds: max(red, mean of the channels in float32), computed in integers.
    rng = np.random.default_rng(3)
    photographs = [rng.integers(0, 256, (67, 45, 3), dtype=np.uint8), read_image(drive_pairs(drive_root)[0][0])]
    red, green = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    for blue in (0, 255):  # every red and green level with blue at each extreme
        photographs.append(np.stack([red, green, np.full_like(red, blue)], axis=2).astype(np.uint8))
    for rgb in photographs:
        expected = np.maximum(rgb[..., 0].astype(np.float32), rgb.astype(np.float32).mean(axis=2))
        found = brightness(rgb)
        assert found.dtype == np.float32 and np.array_equal(found, expected)
