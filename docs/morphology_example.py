"""Draw what the morphology columns count on one written mask (docs/morphology-example.png).

    python docs/morphology_example.py OUT/masks/01_test.png docs/morphology-example.png

Grey: the mask; white: its skeleton; red: junction pixels (each touching cluster is one
branch point); blue: end points. A 256x256 crop, enlarged 3x.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from vesselcli.analysis.morphology import degrees, skeleton
from vesselcli.io.imageio import encode_png, read_mask, write_atomic


def main(mask_path: str, out_path: str, top: int = 300, left: int = 300, size: int = 256) -> None:
    mask = read_mask(Path(mask_path))
    skel = skeleton(mask)
    degree = degrees(skel)
    picture = np.zeros(mask.shape + (3,), np.uint8)
    picture[mask] = (90, 90, 90)
    picture[skel] = (255, 255, 255)
    picture[degree >= 3] = (230, 30, 30)
    picture[degree == 1] = (40, 110, 255)
    crop = picture[top:top + size, left:left + size]
    big = cv2.resize(crop, (3 * size, 3 * size), interpolation=cv2.INTER_NEAREST)
    write_atomic(Path(out_path), encode_png(big))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
