"""Milliseconds per image of ``vesselseg segment`` for real photographs of three sizes, per scale rule.

    python -m bench.scale_rule --data ../shared/data --copies 5

Sizes and sources (training images: only their pixels matter here): 565x584 DRIVE
``21_training.tif``, 999x960 CHASE_DB1 ``Image_01L.jpg``, 3504x2336 HRF ``01_h.jpg``. Each
runs as a fresh ``segment`` process (default options plus ``--no-overlays -q
--scale-rule RULE``) on 1 copy and on ``--copies`` copies; ms per image = (wall of N - wall
of 1) / (N - 1), so start-up and model loading are left out. Median of ``--repeats``.
The calibre rule's time depends on the image: it adds a first look at the FOV rule's scale,
then runs at the scale it picks.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from .measure import run_once

SOURCES = {
    "565x584": ("DRIVE/training/images/21_training.tif",),
    "999x960": ("CHASE_DB1/images/Image_01L.jpg",),
    "3504x2336": ("HRF/images/01_h.jpg",),
}
RULES = ("fov", "calibre")


def wall(folder: Path, rule: str, scratch: Path) -> float:
    out = scratch / f"out-{rule}-{folder.name}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vesselcli", "segment", str(folder), "--out", str(out), "--no-overlays", "-q", "--scale-rule", rule]
    return run_once(command, env={**os.environ}).wall_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_rule", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vesselseg-scale-") as tmp:
        scratch = Path(tmp)
        for size, (source,) in SOURCES.items():
            path = args.data / source
            one, many = scratch / f"{size}-1", scratch / f"{size}-{args.copies}"
            for folder, n in ((one, 1), (many, args.copies)):
                folder.mkdir()
                for i in range(n):
                    shutil.copyfile(path, folder / f"{i:03d}{path.suffix}")
            for rule in args.rules:
                per_image = []
                for _ in range(args.repeats):
                    per_image.append((wall(many, rule, scratch) - wall(one, rule, scratch)) / (args.copies - 1))
                print(f"{size:10s} {rule:8s} {1000 * statistics.median(per_image):7.0f} ms per image", flush=True)
    print(f"load average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
