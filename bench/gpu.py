"""The prepared GPU check of issue 5: PyTorch CUDA throughput and parity with the CPU masks.

    python -m bench.gpu --data ../shared/data            # on a machine with an NVIDIA GPU
    python -m bench.gpu --data ../shared/data --device cpu --repeats 1   # smoke run anywhere

Times the shipped checkpoint's network on DRIVE-sized batches of real tiles (the tiles
``segment`` makes: 592x592 at model scale) in FP32, FP16 and bf16 autocast, channels-last,
with and without CUDA graphs, and checks each variant's masks against FP32 on the CPU (Dice).
Prints one JSON document (machine, rows of variant / images per second / ms per batch / Dice).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vesselcli.checkpoint import load_model, preprocessing_of
from vesselcli.imageio import read_image, read_mask
from vesselcli.metrics import confusion, dice
from vesselcli.preprocess import prepare

MODEL = Path(__file__).resolve().parents[1] / "vesselcli" / "models" / "default.pt"


def drive_batch(data: Path, pre, batch: int, tile: int) -> torch.Tensor:
    """``(batch, 1, tile, tile) float32``: DRIVE test images at model scale, zero-padded."""
    images = sorted((data / "DRIVE" / "test" / "images").glob("*.tif"))[:batch]
    out = np.zeros((batch, 1, tile, tile), np.float32)
    for i, path in enumerate(images * (batch // max(len(images), 1) + 1)):
        if i == batch:
            break
        mask_path = data / "DRIVE" / "test" / "mask" / (path.stem + "_mask.gif")
        x, _ = prepare(read_image(path), read_mask(mask_path), pre)
        h, w = min(tile, x.shape[1]), min(tile, x.shape[2])
        out[i, :, :h, :w] = x[:, :h, :w]
    return torch.from_numpy(out)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after two warm-ups."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tile", type=int, default=592)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible; use --device cpu for a smoke run")
    model, ckpt = load_model(args.model)
    threshold = float(ckpt["threshold"])
    x_cpu = drive_batch(Path(args.data), preprocessing_of(ckpt), args.batch, args.tile)
    with torch.inference_mode():
        reference = torch.sigmoid(model(x_cpu)).numpy() >= threshold
    model = model.to(device).to(memory_format=torch.channels_last)
    x = x_cpu.to(device).contiguous(memory_format=torch.channels_last)
    variants = {"fp32": None}
    if device.type == "cuda":
        variants["fp16"] = torch.float16
        if torch.cuda.is_bf16_supported():
            variants["bf16"] = torch.bfloat16
    rows = []
    for name, dtype in variants.items():
        def run(dtype=dtype):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return model(x)
        seconds = timed(run, args.repeats, device)
        masks = torch.sigmoid(run().float()).cpu().numpy() >= threshold
        rows.append({"variant": name, "images_per_s": args.batch / seconds, "ms_per_batch": 1e3 * seconds,
                     "dice_vs_cpu_fp32": dice(confusion(masks.ravel(), reference.ravel()))})
        if device.type == "cuda":
            rows[-1].update(_graph_row(run, name, args, device, threshold, reference))
    machine = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()}
    print(json.dumps({"machine": machine, "batch": args.batch, "tile": args.tile, "rows": rows}, indent=2))
    return 0


def _graph_row(run, name, args, device, threshold, reference) -> dict:
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
    seconds = timed(graph.replay, args.repeats, device)
    masks = torch.sigmoid(out.float()).cpu().numpy() >= threshold
    return {"graph_images_per_s": args.batch / seconds, "graph_dice_vs_cpu_fp32": dice(confusion(masks.ravel(), reference.ravel()))}


if __name__ == "__main__":
    sys.exit(main())
