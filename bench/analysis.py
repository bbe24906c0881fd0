"""What the analysis adds to a run: morphology per image, and building the HTML report.

    python -m bench.analysis --data ../shared/data [--rows 100000] [--run OUT --copies 100]

1. Morphology cost: ``vesselcli.analysis.morphology.morphology`` on the 20 DRIVE test
   annotations with their FOV masks (565x584; a vessel tree like the masks we write), each
   timed ``--repeats`` times in this process after one warm-up call; the median per image.
2. The report of a big run: a synthetic OUT with ``--rows`` results.csv rows (figures drawn
   at random around DRIVE's, 1% error rows) whose overlays are symbolic links to one real
   565x584 overlay, so thumbnails decode real JPEGs; ``build_report`` timed once, page size.
3. With ``--run OUT`` (the OUT of a ``vesselseg segment`` run): ``build_report`` on a run
   made of ``--copies`` copies of it (its rows renamed ``cNNN/<image>``, its overlays and
   masks linked), e.g. the 20 DRIVE test images x 100 = a 2,000-image run of real outputs;
   time and size.

Prints one JSON line: ``{"morphology_ms": ..., "rows": ..., "report_s": ..., "report_mb": ...,
"run_images": ..., "run_report_s": ..., "run_report_mb": ...}``.

Building the report reads results.csv and at most a few dozen overlays, so its time depends
on the number of rows, not on how the images were made: copies of real outputs time it as a
real run of that size would.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vesselcli.analysis.html_report import build_report
from vesselcli.analysis.morphology import morphology
from vesselcli.io.imageio import encode_jpeg, read_image, read_mask
from vesselcli.run.report import ImageResult, ResultsWriter


def morphology_ms(drive: Path, repeats: int) -> float:
    """Median milliseconds of ``morphology`` per DRIVE test image (annotation inside its FOV)."""
    pairs = [(read_mask(p), read_mask(drive / "test" / "mask" / f"{p.name[:2]}_test_mask.gif"))
             for p in sorted((drive / "test" / "1st_manual").glob("*_manual1.gif"))]
    morphology(*pairs[0])  # imports and first-call set-up are not per-image costs
    times = []
    for mask, fov in pairs:
        for _ in range(repeats):
            start = time.perf_counter()
            morphology(mask, fov, 10.0)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def synthetic_run(out: Path, rows: int, overlay_source: Path) -> None:
    """An OUT with ``rows`` rows of results.csv and an overlay (a hard link) for each."""
    rng = np.random.default_rng(0)
    (out / "overlays").mkdir(parents=True)
    overlay = out / "overlay-source.jpg"
    overlay.write_bytes(encode_jpeg(read_image(overlay_source)))
    writer = ResultsWriter(out / "results.csv", [])
    density = rng.normal(0.125, 0.012, rows)
    dice = rng.normal(0.82, 0.02, rows)
    for i in range(rows):
        name = f"{i:06d}_test"
        if i % 100 == 99:
            writer.append(ImageResult(f"{name}.tif", "error", 0.01, error="not a readable image: truncated file"))
            continue
        os.symlink(overlay, out / "overlays" / f"{name}.jpg")
        d = float(np.clip(dice[i], 0.0, 1.0))
        figures = {"iou": d / (2 - d), "dice": d, "sensitivity": 0.8, "specificity": 0.98, "accuracy": 0.96, "auc": 0.98}
        morph = {"vessel_length_px": float(rng.normal(8500, 600)), "mean_width_px": float(rng.normal(3.3, 0.15)),
                 "branch_points": int(rng.integers(90, 160)), "end_points": int(rng.integers(110, 220)),
                 "segments": int(rng.integers(200, 340)), "tortuosity": float(rng.normal(1.1, 0.01)),
                 "fractal_dimension": float(rng.normal(1.46, 0.02)), "vessel_length_mm": None, "mean_width_um": None}
        pixels = 224000
        writer.append(ImageResult(f"{name}.tif", "ok", 0.3, 565, 584, pixels, int(density[i] * pixels), figures, morph))
    writer.close()


def copied_run(run: Path, copies: int, out: Path) -> int:
    """``copies`` copies of the run in ``run`` as one run in ``out``; returns its row count."""
    with open(run / "results.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames or [], list(reader)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        for k in range(copies):
            writer.writerows({**row, "image": f"c{k:03d}/{row['image']}"} for row in rows)
    for kind in ("overlays", "masks"):
        if (run / kind).is_dir():
            (out / kind).mkdir()
            for k in range(copies):
                os.symlink((run / kind).resolve(), out / kind / f"c{k:03d}")
    return copies * len(rows)


def timed_report(out: Path) -> tuple[float, float]:
    """(seconds, MB) of building ``out``'s report."""
    start = time.perf_counter()
    path = build_report(out, out / "bench-report.html")
    seconds = time.perf_counter() - start
    size = path.stat().st_size / 1e6
    path.unlink()
    return seconds, size


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", type=Path, default=None, help="the OUT folder of a segment run")
    parser.add_argument("--copies", type=int, default=100, help="copies of --run in the timed run (default 100)")
    args = parser.parse_args(argv)
    drive = args.data / "DRIVE"
    result: dict[str, float] = {"morphology_ms": morphology_ms(drive, args.repeats), "rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="vesselseg-report-") as scratch:
        synthetic_run(Path(scratch), args.rows, drive / "test" / "images" / "01_test.tif")
        result["report_s"], result["report_mb"] = timed_report(Path(scratch))
    if args.run is not None:
        with tempfile.TemporaryDirectory(prefix="vesselseg-run-") as scratch:
            result["run_images"] = copied_run(args.run, args.copies, Path(scratch))
            result["run_report_s"], result["run_report_mb"] = timed_report(Path(scratch))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
