"""Where the time of ``segment`` goes: every stage timed on its own, per image.

    python -m bench.stages IMAGES... [--model default.onnx] [--precision fp32,int8] [--repeats 3]

Each stage is the product's own function (``vesselcli.run.stages``, ``preprocess``, ``tiling``,
``metrics``, ``imageio``, ``overlay``) called on the images the way the pipeline calls it, in
one thread, timed per image; a stage's figure is the mean over the images of each image's
fastest of ``--repeats`` runs (the fastest run is the one least disturbed by other work on a
shared machine). The network is timed per engine and precision on each image's own tiles.
``network_parallel`` is the network as ``segment`` runs it on the CPU: two calls at once
(``pipeline.CPU_PARALLEL_CALLS``), each on its share of the cores, over all the images; its
figure is wall time per image (fastest of ``--repeats`` passes). ``startup`` is a fresh
interpreter importing the CLI and its ``segment`` command and opening the engine, as every
``vesselseg segment`` pays once.

Prints one JSON object: ``{"images": N, "size": "565x584", "tiles": [...], "stages": {name: ms},
"network": {precision: ms}, "network_parallel": {precision: ms}, "startup_ms": ...}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Stage names in pipeline order, with what each one covers.
STAGES = {
    "decode": "read and decode the file (vesselcli.io.imageio.read_image)",
    "fov": "detect the field of view (vesselcli.imaging.fov.detect_fov)",
    "scale": "bring image and FOV to the model's scale (preprocess.resize_image/resize_mask)",
    "clahe": "CLAHE of the green channel (cv2, part of preprocess.network_input)",
    "normalise": "standardise inside the FOV, zero outside (rest of preprocess.network_input)",
    "tile_blend": "cut tiles, Gaussian-weighted blending back (tiling.stream_tiled, network left out)",
    "sigmoid": "logits to probabilities (engines.base.sigmoid)",
    "resize_threshold": "probability back to the image's size, threshold, inside the FOV (stages.finish without metrics)",
    "morphology": "every morphology column of the mask inside the FOV (analysis.morphology.morphology)",
    "metrics": "confusion counts, figures and ROC AUC against the annotation (with --gt)",
    "encode_mask": "PNG-encode the mask (imageio.encode_png)",
    "overlay": "compose and JPEG-encode the overlay (overlay.overlay, imageio.encode_jpeg)",
    "write": "write both files atomically with fsync (imageio.write_atomic)",
}


def fastest(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(fastest milliseconds of ``repeats`` calls, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best, result


def time_stages(images: list[Path], engines: dict, repeats: int, truth_dir: Path | None, scratch: Path,
                parallel_engines: dict | None = None) -> dict:
    """Per-stage ms per image (mean over ``images``), the network's ms per precision, and with
    ``parallel_engines`` (precision -> engine opened for parallel calls) the network as segment runs it."""
    import cv2

    from vesselcli.analysis import metrics
    from vesselcli.analysis.morphology import morphology
    from vesselcli.engines.base import sigmoid
    from vesselcli.imaging.fov import detect_fov
    from vesselcli.io.imageio import encode_jpeg, encode_png, read_image, read_mask, write_atomic
    from vesselcli.analysis.overlay import overlay
    from vesselcli.io.pairing import pair_files
    from vesselcli.imaging.preprocess import fov_box, resize_image, resize_mask, scale_factor, scaled_shape
    from vesselcli.run.config import SegmentConfig
    from vesselcli.imaging.tiling import stream_tiled

    first = next(iter(engines.values()))
    pre, threshold = first.info.preprocessing, first.info.threshold
    spec = SegmentConfig(inputs=(), out=scratch).tile_spec(first.info.tile_multiple, first.info.fixed_tile)
    per: dict[str, list[float]] = {name: [] for name in STAGES}
    net: dict[str, list[float]] = {name: [] for name in engines}
    tiles: list[int] = []
    inputs: list[np.ndarray] = []  # each image's network input, for the parallel timing
    tile_shape = ""
    truths = pair_files(images, sorted(truth_dir.iterdir()), None)[0] if truth_dir else {}
    for path in images:
        t, rgb = fastest(lambda: read_image(path), repeats)
        per["decode"].append(t)
        t, fov = fastest(lambda: detect_fov(rgb), repeats)
        per["fov"].append(t)
        shape = scaled_shape(rgb.shape[:2], scale_factor(fov, pre))
        t, (small, small_fov) = fastest(lambda: (resize_image(rgb, shape), resize_mask(fov, shape)), repeats)
        per["scale"].append(t)
        plane = np.ascontiguousarray(small[..., 1])
        clahe = cv2.createCLAHE(clipLimit=pre.clahe_clip, tileGridSize=(pre.clahe_tiles, pre.clahe_tiles))
        t, equalised = fastest(lambda: clahe.apply(plane), repeats)
        per["clahe"].append(t)

        def normalise() -> np.ndarray:
            x = equalised.astype(np.float32)
            inside = x[small_fov]
            out = (x - float(inside.mean())) / max(float(inside.std()), 1.0)
            out[~small_fov] = 0.0
            return out[None]

        t, x = fastest(normalise, repeats)
        per["normalise"].append(t)
        top, left, bh, bw = fov_box(small_fov, first.info.tile_multiple)  # as stages.load crops it
        x = np.ascontiguousarray(x[:, top : top + bh, left : left + bw])
        batches: list[np.ndarray] = []

        def identity(batch: np.ndarray) -> np.ndarray:
            batches.append(batch)
            return batch

        t, _ = fastest(lambda: [o for _, o, _ in stream_tiled([(0, x)], identity, spec)], repeats)
        per["tile_blend"].append(t)
        tiles.append(len(batches) and sum(len(b) for b in batches[: len(batches) // repeats]))
        batch = np.concatenate(batches[: len(batches) // repeats])
        inputs.append(batch)
        tile_shape = tile_shape or f"{batch.shape[3]}x{batch.shape[2]}"
        logits = None
        for name, engine in engines.items():
            engine.infer(batch[:1])  # warm-up of this shape
            t, logits = fastest(lambda: engine.infer(batch), repeats)
            net[name].append(t)
        t, prob = fastest(lambda: sigmoid(logits), repeats)
        per["sigmoid"].append(t)
        model_probability = np.zeros(shape, np.float32)
        model_probability[top : top + bh, left : left + bw] = prob[0, 0, :bh, :bw]

        def resize_threshold() -> tuple[np.ndarray, np.ndarray]:
            full = np.clip(resize_image(model_probability, rgb.shape[:2]), 0.0, 1.0)
            return full, (full >= threshold) & fov

        t, (full, mask) = fastest(resize_threshold, repeats)
        per["resize_threshold"].append(t)
        t, _ = fastest(lambda: morphology(mask, fov), repeats)
        per["morphology"].append(t)
        if path in truths:
            truth = read_mask(truths[path])

            def figures() -> float | None:
                metrics.summary(metrics.confusion(mask, truth, fov))
                return metrics.roc_auc(full, truth, fov)

            t, _ = fastest(figures, repeats)
            per["metrics"].append(t)
        t, png = fastest(lambda: encode_png(mask.astype(np.uint8) * 255), repeats)
        per["encode_mask"].append(t)
        t, jpeg = fastest(lambda: encode_jpeg(overlay(rgb, mask, fov, None)), repeats)
        per["overlay"].append(t)

        def write() -> None:
            write_atomic(scratch / "masks" / f"{path.stem}.png", png)
            write_atomic(scratch / "overlays" / f"{path.stem}.jpg", jpeg)

        t, _ = fastest(write, repeats)
        per["write"].append(t)
    size = f"{rgb.shape[1]}x{rgb.shape[0]}"
    parallel = {name: parallel_ms(engine, inputs, repeats) for name, engine in (parallel_engines or {}).items()}
    return {
        "images": len(images),
        "size": size,
        "tiles": tiles,
        "tile": spec.size,
        "tile_shape": tile_shape,
        "stages": {name: statistics.fmean(v) for name, v in per.items() if v},
        "network": {name: statistics.fmean(v) for name, v in net.items()},
        "network_parallel": parallel,
    }


def parallel_ms(engine, inputs: list[np.ndarray], repeats: int) -> float:  # noqa: ANN001 - an Engine
    """Wall ms per image of ``inputs`` through ``engine`` from ``engine.parallel_calls`` threads at
    once (each takes the next image), fastest of ``repeats`` passes after one warm-up pass."""

    def one_pass() -> float:
        left = list(reversed(inputs))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not left:
                        return
                    batch = left.pop()
                engine.infer(batch)

        threads = [threading.Thread(target=work) for _ in range(max(1, getattr(engine, "parallel_calls", 1)))]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    one_pass()
    return 1000.0 * min(one_pass() for _ in range(repeats)) / max(1, len(inputs))


def startup_ms(model: Path, precision: str, repeats: int) -> float:
    """Fastest wall ms of a fresh interpreter importing the CLI and opening the engine."""
    code = ("from vesselcli.cli import main; import vesselcli.cli.segment; from vesselcli.engines import open_engine; "
            f"open_engine({str(model)!r}, 'onnxruntime', 'cpu', precision={precision!r}, parallel_calls=2).close()")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best


def main(argv: list[str]) -> int:
    import tempfile

    from vesselcli.engines import open_engine, shipped_model

    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, nargs="+", help="image files or one folder")
    p.add_argument("--model", type=Path, default=None, help="float32 ONNX model (default: the shipped one)")
    p.add_argument("--precision", default="fp32,int8", help="comma-separated precisions to time the network in")
    p.add_argument("--gt", type=Path, default=None, help="annotations folder (DRIVE 1st_manual) to time the metrics")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    images = sorted(q for q in args.images[0].iterdir() if not q.name.startswith(".")) if args.images[0].is_dir() else args.images
    model = args.model or shipped_model(".onnx")
    from vesselcli.run.pipeline import CPU_PARALLEL_CALLS

    engines, parallel = {}, {}
    for precision in args.precision.split(","):
        try:
            engines[precision] = open_engine(model, "onnxruntime", "cpu", precision=precision)
            parallel[precision] = open_engine(model, "onnxruntime", "cpu", precision=precision,
                                              parallel_calls=CPU_PARALLEL_CALLS)
        except Exception as exc:  # noqa: BLE001 - a precision without its variant is left out, said why
            print(f"bench.stages: {precision} not timed: {exc}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vesselseg-stages-") as scratch:
        result = time_stages(images, engines, args.repeats, args.gt, Path(scratch), parallel)
    result["startup_ms"] = {name: startup_ms(model, name, args.repeats) for name in engines}
    result["repeats"] = args.repeats
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
