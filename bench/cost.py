"""What the networks cost in arithmetic, and how close the shipped one runs to the machine's limit.

    python -m bench.cost --model vesselcli/models/default.onnx [--checkpoint default.pt]

Prints one JSON object (read by ``python -m bench``):

- ``peak_gflops`` / ``peaks``: the machine's measured arithmetic peaks, float32 and int8, both
  measured the same way (``machine.onnxruntime_matmul_peaks``: one large matmul in ONNX
  Runtime, all cores).
- ``networks``: for the shipped network and the report's, parameters and FLOPs per megapixel
  of image (convolution and transposed-convolution multiply-adds, counted by PyTorch's
  ``FlopCounterMode``, 2 FLOPs per multiply-add; ReLU, pooling and BatchNorm are left out,
  they are a few percent and BatchNorm is folded into the convolutions by ONNX Runtime).
  The shipped network is counted on a pipeline tile (same padding: FLOPs scale with pixels),
  the report's valid network on a 512x512 input run unpadded (``UNet.core``, as the report
  ran it: a 324x324 output interpolated back to 512x512).
- ``image``: how a representative photograph (``--image``, e.g. DRIVE ``01_test.tif``) is run:
  its size at model scale (``vesselcli.imaging.preprocess``), the tiles the pipeline feeds the network
  for its FOV's box (``preprocess.fov_box``, ``tiling.tile_shapes`` with the default tiling)
  and the FLOPs that is.
- ``engines``: for each engine and precision, the median milliseconds of ``Engine.infer`` on
  one batch of two such tiles (the batch the pipeline feeds it), after a warm-up, and the
  operation rate that is.
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


def network_cost(model_args: dict, height: int, width: int, core: bool = False) -> dict[str, float]:
    """Parameters and FLOPs of one forward pass on a ``(1, C, height, width)`` input.

    ``core``: run the layers alone (``UNet.core``, no input padding), as the report did.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vesselcli.network.unet import UNet, UNetConfig, count_parameters

    config = UNetConfig.from_dict(model_args)
    model = UNet(config).eval()
    params = count_parameters(model)
    # On the meta device nothing is computed: shapes flow through and the counter adds them up.
    model = model.to("meta")
    x = torch.zeros(1, config.in_channels, height, width, device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.core(x) if core else model(x)
    flops = float(counter.get_total_flops())
    return {
        "params": params,
        "flops": flops,
        "flops_per_mp": flops / (height * width / 1e6),
        "input": f"{width}x{height}",
    }


def image_as_run(image: Path, pre, spec, flops_per_pixel: float) -> dict:  # noqa: ANN001
    """Model-scale size, tiles and network FLOPs of one photograph as the pipeline runs it."""
    from vesselcli.imaging.fov import detect_fov
    from vesselcli.io.imageio import read_image
    from vesselcli.imaging.preprocess import fov_box, resize_mask, scale_factor, scaled_shape
    from vesselcli.imaging.tiling import tile_shapes

    rgb = read_image(image)
    fov = detect_fov(rgb)
    shape = scaled_shape(rgb.shape[:2], scale_factor(fov, pre))
    _, _, bh, bw = fov_box(resize_mask(fov, shape), max(1, spec.multiple))  # only the FOV's box is run
    tiles = tile_shapes((bh, bw), spec)
    return {
        "name": image.name,
        "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "model_size": f"{shape[1]}x{shape[0]}",
        "tiles": len(tiles),
        "tile_shape": f"{tiles[0][1]}x{tiles[0][0]}",
        "tile_hw": list(tiles[0]),
        "flops": sum(h * w for h, w in tiles) * flops_per_pixel,
    }


def time_engine(model: Path, engine: str, batch: np.ndarray, repeats: int, precision: str = "fp32") -> float:
    """Median milliseconds of ``infer(batch)`` over ``repeats`` calls after one warm-up."""
    from vesselcli.engines import open_engine

    opened = open_engine(model, engine=engine, device="cpu", precision=precision)
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
    from vesselcli.run.config import DEFAULT_BATCH_SIZE, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, SegmentConfig
    from vesselcli.engines import open_engine
    from vesselcli.network.unet import REPORT_CONFIG

    from .machine import onnxruntime_matmul_peaks

    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the shipped float32 .onnx model (its int8 variant beside it is timed too)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="the shipped .pt checkpoint (times the torch engine)")
    parser.add_argument("--image", type=Path, required=True, help="a representative photograph (DRIVE 01_test.tif)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE_SIZE)
    parser.add_argument("--overlap", type=int, default=DEFAULT_TILE_OVERLAP)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square matmuls measuring the peaks")
    args = parser.parse_args(argv)

    peaks = onnxruntime_matmul_peaks(args.matmul)
    shipped = open_engine(args.model, engine="onnxruntime", device="cpu", precision="fp32")
    info = shipped.info
    shipped.close()
    model_args = dict(info.model_args)
    channels = int(model_args.get("in_channels", 1))
    config = SegmentConfig(inputs=(), out=Path("."), tile_size=args.tile, tile_overlap=args.overlap, batch_size=args.batch)
    spec = config.tile_spec(info.tile_multiple, info.fixed_tile)
    networks = {
        "shipped": network_cost(model_args, args.tile, args.tile),
        "report": network_cost(REPORT_CONFIG.to_dict(), 512, 512, core=True),
    }
    per_pixel = networks["shipped"]["flops"] / (args.tile * args.tile)
    image = image_as_run(args.image, info.preprocessing, spec, per_pixel)
    th, tw = image["tile_hw"]
    batch = np.random.default_rng(0).standard_normal((args.batch, channels, th, tw)).astype(np.float32)
    batch_flops = per_pixel * th * tw * args.batch
    engines = {}
    runs = {"onnxruntime fp32": (args.model, "onnxruntime", "fp32"), "onnxruntime int8": (args.model, "onnxruntime", "int8"),
            "torch fp32": (args.checkpoint, "torch", "fp32")}
    for name, (path, engine, precision) in runs.items():
        if path is None or not path.is_file():
            continue
        try:
            ms = time_engine(path, engine, batch, args.repeats, precision)
        except Exception as exc:  # noqa: BLE001 - e.g. no gated int8 variant: left out, said why
            print(f"bench.cost: {name} not timed: {exc}", file=sys.stderr)
            continue
        engines[name] = {"ms_per_batch": ms, "gflops": batch_flops / (ms / 1000.0) / 1e9, "precision": precision}
    print(json.dumps({
        "peak_gflops": peaks["fp32"],
        "peaks": peaks,
        "matmul": args.matmul,
        "tile": args.tile,
        "batch": args.batch,
        "batch_shape": f"{args.batch}x{channels}x{th}x{tw}",
        "repeats": args.repeats,
        "networks": networks,
        "image": image,
        "engines": engines,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
