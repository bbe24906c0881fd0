"""The image folders every speed figure is measured on, built under a scratch folder.

- ``drive_images``: the DRIVE test photographs (565x584 TIFF), in their order.
- ``count_set``: N images made by cycling through those photographs with symbolic links (the
  files are the same; the names differ so every output is distinct), for the 20 / 200 / 2,000
  image scaling runs.
- ``size_set``: the same photographs brought to a camera's frame size (scaled to the frame's
  height, keeping the aspect ratio, and centred on a black frame of the full width), written as
  JPEG quality 95 like a fundus camera's output; from 565x584 up to 3504x2336 (HRF's size).

Folders are rebuilt only when missing or incomplete, so repeated runs reuse them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from vesselcli.io.imageio import encode_jpeg, read_image, write_atomic
from vesselcli.io.protocols import drive_test_set

#: (width, height) of the size-scaling runs: DRIVE, CHASE_DB1, half HRF, HRF.
FRAME_SIZES: tuple[tuple[int, int], ...] = ((565, 584), (999, 960), (1752, 1168), (3504, 2336))


def drive_images(data: Path) -> list[Path]:
    """The DRIVE test photographs, sorted; a clear error when the dataset is absent."""
    return list(drive_test_set(data).images)


def count_set(sources: list[Path], count: int, root: Path) -> Path:
    """A folder of ``count`` symbolic links cycling through ``sources``; returns the folder."""
    folder = root / f"count-{count}"
    names = [f"{i:05d}_{sources[i % len(sources)].name}" for i in range(count)]
    if folder.is_dir() and sorted(p.name for p in folder.iterdir()) == names:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        (folder / name).symlink_to(sources[i % len(sources)].resolve())
    return folder


def fit_to_frame(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 3) uint8`` scaled to ``height`` rows (aspect kept) and centred on a black
    ``(height, width, 3)`` frame; cropped at the sides if the scaled image is wider."""
    scale = height / rgb.shape[0]
    new_w = max(1, round(rgb.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    scaled = cv2.resize(rgb, (new_w, height), interpolation=interpolation)
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    if new_w <= width:
        left = (width - new_w) // 2
        frame[:, left : left + new_w] = scaled
    else:
        left = (new_w - width) // 2
        frame[:] = scaled[:, left : left + width]
    return frame


def size_set(sources: list[Path], width: int, height: int, root: Path) -> Path:
    """A folder of the ``sources`` fitted to a ``width x height`` frame, as JPEG files."""
    folder = root / f"size-{width}x{height}"
    names = [f"{p.stem}.jpg" for p in sources]
    if folder.is_dir() and sorted(p.name for p in folder.iterdir()) == sorted(names):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for source, name in zip(sources, names):
        frame = fit_to_frame(read_image(source), width, height)
        write_atomic(folder / name, encode_jpeg(frame, quality=95))
    return folder
