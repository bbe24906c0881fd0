"""The one preprocessing function shared by training and inference.

Training and ``segment`` both call ``prepare`` so they cannot drift apart: an image is
brought to the model's scale (by its FOV diameter), then turned into the network input.
Pure functions over numpy arrays.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .fov import fov_diameter


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input; stored in every checkpoint and ONNX file.

    ``fov_diameter``: the FOV diameter in pixels the model was trained at; images are resized
    so their FOV has this diameter. ``scale_tolerance``: relative deviation left alone (no
    resampling when the scale factor is within 1 +- tolerance). ``channel``: which colour the
    network sees ("green" or "grey"). ``clahe_clip``/``clahe_tiles``: local contrast
    equalisation. Normalisation is zero mean and unit variance inside the FOV, zero outside.
    """

    fov_diameter: float = 540.0
    scale_tolerance: float = 0.1
    channel: str = "green"
    clahe_clip: float = 2.0
    clahe_tiles: int = 8

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def scale_factor(fov: np.ndarray, pre: Preprocessing) -> float:
    """Factor that brings an image with this ``(H, W) bool`` FOV to the model's scale.

    1.0 when the FOV is already within ``scale_tolerance`` of the trained diameter.
    """
    factor = pre.fov_diameter / fov_diameter(fov)
    if abs(factor - 1.0) <= pre.scale_tolerance:
        return 1.0
    return factor


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H, W) after scaling by ``factor``, at least 1 pixel each way."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resize_image(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W[, C])`` to ``shape`` = (H', W'): area averaging down, bilinear up."""
    if array.shape[:2] == tuple(shape):
        return array
    shrinking = shape[0] * shape[1] < array.shape[0] * array.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a ``(H, W) bool`` mask to ``shape`` by nearest neighbour."""
    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def network_input(rgb: np.ndarray, fov: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` and ``(H, W) bool`` FOV at model scale -> ``(1, H, W) float32``.

    The chosen channel is equalised with CLAHE (which evens out illumination across cameras),
    then standardised inside the FOV; pixels outside the FOV are set to zero.
    """
    if pre.channel == "green":
        plane = rgb[..., 1]
    elif pre.channel == "grey":
        plane = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"unknown preprocessing channel {pre.channel!r}; expected 'green' or 'grey'")
    plane = np.ascontiguousarray(plane)
    clahe = cv2.createCLAHE(clipLimit=pre.clahe_clip, tileGridSize=(pre.clahe_tiles, pre.clahe_tiles))
    plane = clahe.apply(plane).astype(np.float32)
    inside = plane[fov] if fov.any() else plane.ravel()
    mean = float(inside.mean())
    std = float(inside.std())
    out = (plane - mean) / max(std, 1.0)
    out[~fov] = 0.0
    return out[None]


def fov_box(fov: np.ndarray, align: int = 1) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the smallest box holding every FOV pixel of ``(H, W) bool``.

    ``top`` and ``left`` are rounded down to multiples of ``align``: a U-Net with three 2x2
    poolings is not shift-invariant, and a box starting off its 8-pixel grid moved the masks of
    DRIVE images by up to 3% of Dice, where an aligned box leaves them as they were. The whole
    image when the FOV is empty. Nothing outside this box can be called a vessel, so the
    network need not see it (a DRIVE image's FOV box is about 540x540 of its 565x584).
    """
    rows = np.flatnonzero(fov.any(axis=1))
    cols = np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        return 0, 0, fov.shape[0], fov.shape[1]
    top, left = int(rows[0]) // align * align, int(cols[0]) // align * align
    return top, left, int(rows[-1]) + 1 - top, int(cols[-1]) + 1 - left


def prepare(rgb: np.ndarray, fov: np.ndarray, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Bring an original-size image to model scale and make its network input.

    ``rgb``: ``(H, W, 3) uint8``; ``fov``: ``(H, W) bool``. Returns the ``(1, h, w) float32``
    network input and the ``(h, w) bool`` FOV at model scale.
    """
    return prepare_at(rgb, fov, pre, scale_factor(fov, pre))


def prepare_at(rgb: np.ndarray, fov: np.ndarray, pre: Preprocessing, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``prepare`` at a given scale ``factor`` (model pixels per original pixel)."""
    shape = scaled_shape(rgb.shape[:2], factor)
    small = resize_image(rgb, shape)
    small_fov = resize_mask(fov, shape)
    return network_input(small, small_fov, pre), small_fov
