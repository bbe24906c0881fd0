"""The prepared GPU check: does this GPU give the CPU's masks, and how fast is it per precision.

    python -m bench.gpu --data ../shared/data                          # on a machine with an NVIDIA GPU
    python -m bench.gpu --data ../shared/data --device cpu --repeats 1 # smoke run anywhere

Feeds the shipped model a batch of real DRIVE test tiles (what ``segment`` gives an engine:
592x592 at model scale) on every backend installed: ONNX Runtime with the CUDA provider (what
``pip install 'vesselseg[gpu]'`` brings) in FP32, and PyTorch on CUDA (a CUDA build of torch)
in FP32, FP16 and bf16 autocast, channels-last, each also replayed as a CUDA graph. Every
variant's masks are compared with FP32 masks from ONNX Runtime on the CPU. Prints one JSON
document: ``machine``, ``batch``, ``tile`` and ``rows`` of {engine, variant, images_per_s,
ms_per_batch, dice_vs_cpu_fp32, max_abs_logit_diff, pass} (or {engine, variant, error}).

Exit code 0 when every row passes (Dice against the CPU masks >= 0.999 in FP32, >= 0.99 in
reduced precision), 1 when a row falls short, 2 when no backend could run on the device.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from vesselcli.engines import EngineUnavailable, ModelError, shipped_model, sigmoid
from vesselcli.engines.onnxruntime import OnnxRuntimeEngine
from vesselcli.io.imageio import read_image, read_mask
from vesselcli.analysis.metrics import confusion, dice
from vesselcli.io.protocols import drive_test_set, fov_masks
from vesselcli.imaging.preprocess import Preprocessing, prepare

#: Dice of a variant's masks against the CPU's FP32 masks needed to pass.
FLOORS = {"fp32": 0.999, "fp16": 0.99, "bf16": 0.99}


def drive_batch(data: Path, pre: Preprocessing, batch: int, tile: int) -> np.ndarray:
    """``(batch, 1, tile, tile) float32``: DRIVE test images at model scale, zero-padded, repeated to fill."""
    try:
        test = drive_test_set(data)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    masks = fov_masks(test)
    out = np.zeros((batch, 1, tile, tile), np.float32)
    for i in range(batch):
        path = test.images[i % len(test.images)]
        x, _ = prepare(read_image(path), read_mask(masks[path]), pre)
        h, w = min(tile, x.shape[1]), min(tile, x.shape[2])
        out[i, :, :h, :w] = x[:, :h, :w]
    return out


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after two warm-ups."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(name: str, variant: str, logits: np.ndarray, seconds: float, reference: np.ndarray, threshold: float,
            batch: int) -> dict:
    """One result row: speed, and masks and logits against the CPU reference logits."""
    masks, expected = sigmoid(logits) >= threshold, sigmoid(reference) >= threshold
    score = dice(confusion(masks.ravel(), expected.ravel()))
    return {"engine": name, "variant": variant, "images_per_s": batch / seconds, "ms_per_batch": 1e3 * seconds,
            "dice_vs_cpu_fp32": score, "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "pass": score >= FLOORS[variant.split()[0]]}


def onnxruntime_rows(model: Path, x: np.ndarray, device: str, repeats: int, reference: np.ndarray, threshold: float) -> list[dict]:
    """ONNX Runtime on ``device`` (the CUDA provider for 'cuda'), FP32."""
    try:
        engine = OnnxRuntimeEngine(model, device)
    except (ImportError, EngineUnavailable, ModelError) as exc:
        return [{"engine": "onnxruntime", "variant": "fp32", "error": f"{exc}; run `vesselseg info` to see what is missing"}]
    seconds = timed(lambda: engine.infer(x), repeats)
    row = compare("onnxruntime", "fp32", engine.infer(x), seconds, reference, threshold, len(x))
    engine.close()
    return [row]


def torch_rows(checkpoint: Path, x: np.ndarray, device: str, repeats: int, reference: np.ndarray, threshold: float) -> list[dict]:
    """PyTorch on ``device``: FP32, and on CUDA FP16 and bf16 autocast, each also as a CUDA graph."""
    try:
        import torch

        from vesselcli.network.checkpoint import load_model
    except ImportError as exc:
        return [{"engine": "torch", "variant": "fp32", "error": f"torch is not installed ({exc.name})"}]
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        return [{"engine": "torch", "variant": "fp32", "error": f"this torch {torch.__version__} sees no CUDA device"}]
    model, _ = load_model(checkpoint)
    model = model.to(target).to(memory_format=torch.channels_last)
    inputs = torch.from_numpy(x).to(target).contiguous(memory_format=torch.channels_last)
    variants = {"fp32": None}
    if target.type == "cuda":
        variants["fp16"] = torch.float16
        if torch.cuda.is_bf16_supported():
            variants["bf16"] = torch.bfloat16
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
    rows = []
    for name, dtype in variants.items():
        def run(dtype=dtype):  # noqa: ANN001, ANN202
            with torch.inference_mode(), torch.autocast(target.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return model(inputs)
        seconds = timed(run, repeats, sync)
        rows.append(compare("torch", name, run().float().cpu().numpy(), seconds, reference, threshold, len(x)))
        if target.type == "cuda":
            rows.append(_graph_row(torch, run, name, repeats, reference, threshold, len(x)))
    return rows


def _graph_row(torch, run, name, repeats, reference, threshold, batch) -> dict:  # noqa: ANN001
    """The same forward captured in a CUDA graph (removes per-kernel launch overhead)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    seconds = timed(graph.replay, repeats, torch.cuda.synchronize)
    return compare("torch", f"{name} cuda-graph", out.float().cpu().numpy(), seconds, reference, threshold, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", default=str(shipped_model(".onnx")), help="the .onnx model (ONNX Runtime)")
    parser.add_argument("--checkpoint", default=str(shipped_model(".pt")), help="its .pt checkpoint (PyTorch)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a smoke run")
    parser.add_argument("--engine", choices=["all", "onnxruntime", "torch"], default="all")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tile", type=int, default=592)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    cpu = OnnxRuntimeEngine(args.model, "cpu")
    x = drive_batch(Path(args.data), cpu.info.preprocessing, args.batch, args.tile)
    reference, threshold = cpu.infer(x), cpu.info.threshold
    cpu.close()
    rows = []
    if args.engine in ("all", "onnxruntime"):
        rows += onnxruntime_rows(Path(args.model), x, args.device, args.repeats, reference, threshold)
    if args.engine in ("all", "torch"):
        rows += torch_rows(Path(args.checkpoint), x, args.device, args.repeats, reference, threshold)
    machine = {"python": platform.python_version(), "device": args.device, "processor": platform.processor(),
               "gpu": _gpu_name()}
    print(json.dumps({"machine": machine, "batch": args.batch, "tile": args.tile, "rows": rows}, indent=2))
    measured = [row for row in rows if "error" not in row]
    if not measured:
        return 2
    return 0 if all(row["pass"] for row in measured) else 1


def _gpu_name() -> str:
    from vesselcli.cli.info import gpu_names

    return ", ".join(gpu_names()) or "none found"


if __name__ == "__main__":
    sys.exit(main())
