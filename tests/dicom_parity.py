"""DRIVE test images as DICOM, every transfer syntax, against the TIFFs and the decoded JPEGs.

    python tests/dicom_parity.py --data ../shared/data --work /tmp/parity [-n 20]

Wraps each DRIVE test photograph as Ophthalmic Photography objects (uncompressed, RLE,
JPEG 2000 and JPEG-LS lossless, JPEG Baseline), writes the JPEG stream decoded by OpenCV as
PNG, segments every folder with the shipped model (``--gt 1st_manual --fov mask``) and prints,
per syntax, how many masks are byte-identical and how many rows have identical figures to the
TIFF's (lossless) or the decoded PNG's (JPEG).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as make  # noqa: E402

from vesselcli.io.imageio import encode_png, read_grey, read_image  # noqa: E402

SYNTAXES = ("native", "rle", "jpeg2000", "jpegls")
FIGURES = ("fov_pixels", "vessel_pixels", "vessel_density", "iou", "dice", "sensitivity", "specificity",
           "accuracy", "auc", "gt_mean_width_px", "width_ratio")


def build(images: list[Path], work: Path) -> None:
    for n, path in enumerate(images):
        rgb, key = read_image(path), path.name[:2]
        for i, syntax in enumerate(SYNTAXES):
            ds = make.photograph(rgb, f"1.2.826.0.1.3680043.8.498.{n + 1}.{i + 1}")
            make.save(ds if syntax == "native" else make.compressed(ds, syntax), work / syntax / f"{key}.dcm")
        ds, stream = make.jpeg_baseline(rgb, f"1.2.826.0.1.3680043.8.498.{n + 1}.9")
        make.save(ds, work / "jpeg" / f"{key}.dcm")
        decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(stream, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        (work / "jpegpng").mkdir(parents=True, exist_ok=True)
        (work / "jpegpng" / f"{key}.png").write_bytes(encode_png(decoded))


def segment(folder: Path, out: Path, test: Path) -> dict[str, dict[str, str]]:
    subprocess.run([sys.executable, "-m", "vesselcli", "segment", str(folder), "--out", str(out), "--gt",
                    str(test / "1st_manual"), "--fov", str(test / "mask"), "--no-overlays", "-q"], check=True)
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        return {row["image"][:2]: row for row in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("-n", type=int, default=20, help="number of DRIVE test images")
    args = parser.parse_args()
    test = args.data / "DRIVE" / "test"
    images = sorted((test / "images").glob("*_test.tif"))[: args.n]
    tif = args.work / "tif"
    tif.mkdir(parents=True, exist_ok=True)
    for path in images:
        (tif / path.name).write_bytes(path.read_bytes())
    build(images, args.work)
    results = {name: segment(args.work / name, args.work / "out" / name, test)
               for name in (*SYNTAXES, "jpeg", "jpegpng", "tif")}
    keys = sorted(results["tif"])
    for name, reference in [*((s, "tif") for s in SYNTAXES), ("jpeg", "jpegpng")]:
        def mask(run: str, key: str) -> np.ndarray:
            stem = f"{key}_test" if run == "tif" else key
            return read_grey(args.work / "out" / run / "masks" / f"{stem}.png")

        masks = sum(np.array_equal(mask(name, k), mask(reference, k)) for k in keys)
        rows = sum(all(results[name][k][c] == results[reference][k][c] for c in FIGURES) for k in keys)
        dice = np.mean([float(results[name][k]["dice"]) for k in keys])
        print(f"{name} vs {reference}: masks identical {masks}/{len(keys)}, figures identical {rows}/{len(keys)}, "
              f"mean Dice {dice:.4f}")


if __name__ == "__main__":
    main()
