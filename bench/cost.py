"""What the networks cost in arithmetic, and how close the shipped one runs to the machine's limit.

    python -m bench.cost --model vesselcli/models/default.onnx [--checkpoint default.pt]

Prints one JSON object (read by ``python -m bench``):

- ``peak_gflops``: the machine's measured float32 peak (``machine.matmul_peak_gflops``).
- ``networks``: for the shipped network and the report's, parameters and FLOPs per megapixel
  of image (convolution and transposed-convolution multiply-adds, counted by PyTorch's
  ``FlopCounterMode``, 2 FLOPs per multiply-add; ReLU, pooling and BatchNorm are left out,
  they are a few percent and BatchNorm is folded into the convolutions by ONNX Runtime).
  The shipped network is counted on a pipeline tile (same padding: FLOPs scale with pixels),
  the report's valid network on a 512x512 image (its input is padded to the size whose valid
  output covers 512x512, as its ``forward`` does).
- ``image``: how a representative photograph (``--image``, e.g. DRIVE ``01_test.tif``) is run:
  its size at model scale (``vesselcli.preprocess``), the tiles the pipeline cuts from it
  (``vesselcli.tiling.tile_count`` with the default tile size and overlap) and the FLOPs that is.
- ``engines``: for each engine, the median milliseconds of ``Engine.infer`` on one batch of
  pipeline tiles (the batch the pipeline feeds it), after a warm-up, and the FLOP rate that is.
Run in its own process so its thread pools never compete with the measured runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def network_cost(model_args: dict, height: int, width: int) -> dict[str, float]:
    """Parameters and FLOPs of one forward pass on a ``(1, C, height, width)`` input."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vesselcli.unet import UNet, UNetConfig, count_parameters

    config = UNetConfig.from_dict(model_args)
    model = UNet(config).eval()
    params = count_parameters(model)
    # On the meta device nothing is computed: shapes flow through and the counter adds them up.
    model = model.to("meta")
    x = torch.zeros(1, config.in_channels, height, width, device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    flops = float(counter.get_total_flops())
    return {
        "params": params,
        "flops": flops,
        "flops_per_mp": flops / (height * width / 1e6),
        "input": f"{width}x{height}",
    }


def image_as_run(image: Path, pre, tile: int, overlap: int, batch: int, tile_flops: float) -> dict:
    """Model-scale size, tiles and network FLOPs of one photograph as the pipeline runs it."""
    from vesselcli.fov import detect_fov
    from vesselcli.imageio import read_image
    from vesselcli.preprocess import scale_factor, scaled_shape
    from vesselcli.tiling import TileSpec, tile_count

    rgb = read_image(image)
    shape = scaled_shape(rgb.shape[:2], scale_factor(detect_fov(rgb), pre))
    tiles = tile_count(shape, TileSpec(size=tile, overlap=overlap, batch=batch))
    return {
        "name": image.name,
        "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "model_size": f"{shape[1]}x{shape[0]}",
        "tiles": tiles,
        "flops": tiles * tile_flops,
    }


def time_engine(model: Path, engine: str, batch: np.ndarray, repeats: int) -> float:
    """Median milliseconds of ``infer(batch)`` over ``repeats`` calls after one warm-up."""
    from vesselcli.engines import open_engine

    opened = open_engine(model, engine=engine, device="cpu")
    try:
        opened.infer(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            opened.infer(batch)
            times.append(time.perf_counter() - start)
    finally:
        opened.close()
    return 1000.0 * statistics.median(times)


def main(argv: list[str]) -> int:
    from vesselcli.config import DEFAULT_BATCH_SIZE, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE
    from vesselcli.engines import open_engine
    from vesselcli.unet import REPORT_CONFIG

    from .machine import matmul_peak_gflops

    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the shipped .onnx model")
    parser.add_argument("--checkpoint", type=Path, default=None, help="the shipped .pt checkpoint (times the torch engine)")
    parser.add_argument("--image", type=Path, required=True, help="a representative photograph (DRIVE 01_test.tif)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE_SIZE)
    parser.add_argument("--overlap", type=int, default=DEFAULT_TILE_OVERLAP)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square matmul measuring the peak")
    args = parser.parse_args(argv)

    peak = matmul_peak_gflops(args.matmul)
    shipped = open_engine(args.model, engine="onnxruntime", device="cpu")
    model_args = dict(shipped.info.model_args)
    channels = int(model_args.get("in_channels", 1))
    pre = shipped.info.preprocessing
    shipped.close()
    networks = {
        "shipped": network_cost(model_args, args.tile, args.tile),
        "report": network_cost(REPORT_CONFIG.to_dict(), 512, 512),
    }
    image = image_as_run(args.image, pre, args.tile, args.overlap, args.batch, networks["shipped"]["flops"])
    batch = np.random.default_rng(0).standard_normal((args.batch, channels, args.tile, args.tile)).astype(np.float32)
    batch_flops = networks["shipped"]["flops"] * args.batch
    engines = {}
    paths = {"onnxruntime": args.model, "torch": args.checkpoint}
    for name, path in paths.items():
        if path is None or not path.is_file():
            continue
        ms = time_engine(path, name, batch, args.repeats)
        engines[name] = {"ms_per_batch": ms, "gflops": batch_flops / (ms / 1000.0) / 1e9}
    print(json.dumps({
        "peak_gflops": peak,
        "matmul": args.matmul,
        "tile": args.tile,
        "batch": args.batch,
        "repeats": args.repeats,
        "networks": networks,
        "image": image,
        "engines": engines,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
