"""``python -m bench.large_inputs --data ../shared/data``: FOV detection and ROC AUC at 64 megapixels.

The photograph is HRF ``01_h.jpg`` (3504x2336) scaled by 2.8 to 9811x6541 (64.2 megapixels),
bilinear; the probability map is the shipped model's on the original photograph (ONNX Runtime,
the CLI's tiling and sigmoid), scaled the same way, scored against HRF's annotation and FOV
mask (nearest neighbour). Prints, for ``detect_fov`` and ``metrics.roc_auc``: the median
wall time of 3 calls and the peak of memory allocated during one call (``tracemalloc``, which
sees numpy's and OpenCV's arrays), then the AUC. Only public functions are called, so the same
command run against an older checkout (``PYTHONPATH=that/checkout``) gives its figures: there
``roc_auc`` sorts, so its AUC is the exact one the binned AUC is compared with.
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

SCALE = 2.8


def _measure(call: Callable[[], object], runs: int = 3) -> tuple[object, float, float]:
    """(result, median seconds over ``runs`` calls, peak MiB allocated during one more call)."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
        del result
    tracemalloc.start()
    result = call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, statistics.median(seconds), peak / 2**20


def _scaled(array: np.ndarray, interpolation: int) -> np.ndarray:
    height, width = array.shape[:2]
    return cv2.resize(array, (round(width * SCALE), round(height * SCALE)), interpolation=interpolation)


def _probability(rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """The shipped model's ``(H, W) float32`` vessel probability of a photograph."""
    from vesselcli.engines import open_engine
    from vesselcli.engines.base import sigmoid
    from vesselcli.imaging.preprocess import prepare, resize_image
    from vesselcli.imaging.tiling import TileSpec, sliding_window

    engine = open_engine(None, "onnxruntime", "cpu")
    try:
        network_input, _ = prepare(rgb, fov, engine.info.preprocessing)
        small = sliding_window(network_input, lambda batch: sigmoid(engine.infer(batch)), TileSpec(592, 64, 2))[0]
    finally:
        engine.close()
    return np.clip(resize_image(small.astype(np.float32), fov.shape), 0.0, 1.0)


def main(argv: list[str] | None = None) -> None:
    from vesselcli.analysis import metrics
    from vesselcli.imaging.fov import detect_fov
    from vesselcli.io.imageio import read_image, read_mask

    parser = argparse.ArgumentParser(prog="python -m bench.large_inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding HRF/")
    args = parser.parse_args(argv)
    hrf = args.data / "HRF"
    rgb = read_image(hrf / "images" / "01_h.jpg")
    fov = read_mask(hrf / "mask" / "01_h_mask.tif")
    truth = read_mask(hrf / "manual1" / "01_h.tif")
    probability = _probability(rgb, fov)

    big = _scaled(rgb, cv2.INTER_LINEAR)
    print(f"photograph: {big.shape[1]}x{big.shape[0]} = {big.shape[0] * big.shape[1] / 1e6:.1f} megapixels")
    found, seconds, peak = _measure(lambda: detect_fov(big))
    print(f"detect_fov: {seconds:.2f} s (median of 3), peak {peak:.0f} MiB allocated, {int(found.sum()):,} FOV pixels")
    del big, found

    big_probability = _scaled(probability, cv2.INTER_LINEAR)
    big_truth = _scaled(truth.astype(np.uint8), cv2.INTER_NEAREST) > 0
    big_fov = _scaled(fov.astype(np.uint8), cv2.INTER_NEAREST) > 0
    auc, seconds, peak = _measure(lambda: metrics.roc_auc(big_probability, big_truth, big_fov))
    print(f"roc_auc: {seconds:.2f} s (median of 3), peak {peak:.0f} MiB allocated, "
          f"AUC {auc:.9f} over {int(big_fov.sum()):,} FOV pixels")
    bound = getattr(metrics, "auc_bin_error", None)
    if bound is not None:
        print(f"binning error bound (auc_bin_error): {bound(big_probability, big_truth, big_fov):.2e}")


if __name__ == "__main__":
    main()
