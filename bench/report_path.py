"""The report's inference path, as its authors built it and a user script of the seed project runs it.

    python -m bench.report_path IMAGES_DIR OUT_DIR

The report's network (``vesselcli.network.unet.REPORT_CONFIG``: 64 base channels, 4 poolings, valid
convolutions, 31M parameters) in eager PyTorch, one image at a time: open the photograph with
Pillow, convert to grey, resize to 512x512 (the report's protocol), feed that 512x512 image to
the valid network *unpadded* (``UNet.core``: its output is 324x324), interpolate the logits
bilinearly back to 512x512 (the report: "Interpolation methods like bilinear or
nearest-neighbor interpolation can be used at the final layer to adjust the output dimensions
to match the input"), sigmoid, threshold at 0.5, save the 512x512 mask as PNG.

An earlier version reflection-padded each input by the network's margin so that the valid
output covered 512x512 (``UNet.forward``); that is about 3x the arithmetic and not what the
report did. The weights are randomly initialised (seed 0): the time of a network does not
depend on its weights, and the report's trained weights are not available here.

Prints one JSON line: ``{"images": N, "loop_s": seconds for the loop (after imports and
model construction), "setup_s": seconds to build the model, "network_output": [h, w]}``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vesselcli.network.unet import REPORT_CONFIG, UNet

SIDE = 512
THRESHOLD = 0.5


def segment_one(model: UNet, grey: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """``(512, 512) uint8`` grey image -> (``(512, 512) bool`` mask, the network's own output size)."""
    x = torch.from_numpy(grey.astype(np.float32) / 255.0)[None, None]
    with torch.no_grad():
        logits = model.core(x)
        size = tuple(logits.shape[-2:])
        logits = F.interpolate(logits, size=grey.shape, mode="bilinear", align_corners=False)
        prob = torch.sigmoid(logits)[0, 0].numpy()
    return prob > THRESHOLD, size


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.report_path IMAGES_DIR OUT_DIR", file=sys.stderr)
        return 2
    images = sorted(p for p in Path(argv[0]).iterdir() if not p.name.startswith("."))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(0)
    model = UNet(REPORT_CONFIG).eval()
    setup = time.perf_counter() - start
    start = time.perf_counter()
    size: tuple[int, int] = (0, 0)
    for path in images:
        grey = np.asarray(Image.open(path).convert("L").resize((SIDE, SIDE), Image.BILINEAR))
        mask, size = segment_one(model, grey)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{path.stem}.png")
    loop = time.perf_counter() - start
    print(json.dumps({"images": len(images), "loop_s": loop, "setup_s": setup, "network_output": list(size)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
