"""The I/O floor: what segmenting a folder costs with no model at all.

    python -m bench.io_floor IMAGES_DIR OUT_DIR [--workers N]

For every image, the same work the pipeline does around its model and nothing else: read and
decode it (``vesselcli.io.imageio.read_image``, the pipeline's reader), make a full-size binary
mask (a plain threshold of the green channel stands in for the network), encode it as PNG and
the photograph as a JPEG overlay, write both atomically (``write_atomic``, as the pipeline
does), and append a CSV row. Images are spread over ``--workers`` threads (default: every
usable core), so this is the fastest that reading and writing alone can go on this machine: no
pipeline, whatever its model, can beat it.

Prints one JSON line: ``{"images": N, "loop_s": seconds, "setup_s": 0}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vesselcli.io.imageio import encode_jpeg, encode_png, read_image, write_atomic

from .machine import usable_cores


def process(path: Path, out: Path) -> str:
    """Read, 'segment' by a threshold, encode and write one image; returns its CSV row."""
    rgb = read_image(path)
    mask = np.where(rgb[..., 1] > 96, 255, 0).astype(np.uint8)
    write_atomic(out / "masks" / f"{path.stem}.png", encode_png(mask))
    write_atomic(out / "overlays" / f"{path.stem}.jpg", encode_jpeg(rgb))
    return f"{path.name},{rgb.shape[1]},{rgb.shape[0]},{int(np.count_nonzero(mask))}\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.io_floor", description="Read, encode and write images with no model.")
    parser.add_argument("images", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=usable_cores())
    args = parser.parse_args(argv)
    images = sorted(p for p in args.images.iterdir() if not p.name.startswith("."))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(args.out / "results.csv", "w") as csv, ThreadPoolExecutor(args.workers) as pool:
        csv.write("image,width,height,vessel_pixels\n")
        for row in pool.map(lambda p: process(p, args.out), images):
            csv.write(row)
            csv.flush()
    loop = time.perf_counter() - start
    print(json.dumps({"images": len(images), "loop_s": loop, "setup_s": 0.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
