"""The report's inference path, as a user script of the seed project would run it.

    python -m bench.report_path IMAGES_DIR OUT_DIR

The report's network (``vesselcli.unet.REPORT_CONFIG``: 64 base channels, 4 poolings, valid
convolutions, 31M parameters) in eager PyTorch, one image at a time at 512x512, with the
reading and writing a script does: open the photograph with Pillow, convert to grey, resize to
512x512 (the report's protocol), run the network, threshold the sigmoid at 0.5, save the
512x512 mask as PNG. The weights are randomly initialised (seed 0): the time of a network does
not depend on its weights, and the report's trained weights are not available here.

Prints one JSON line: ``{"images": N, "loop_s": seconds for the loop (after imports and
model construction), "setup_s": seconds to build the model}``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vesselcli.unet import REPORT_CONFIG, UNet

SIDE = 512


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
    for path in images:
        grey = Image.open(path).convert("L").resize((SIDE, SIDE), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None, None]
        with torch.no_grad():
            prob = torch.sigmoid(model(x))[0, 0].numpy()
        Image.fromarray(((prob > 0.5) * 255).astype(np.uint8)).save(out / f"{path.stem}.png")
    loop = time.perf_counter() - start
    print(json.dumps({"images": len(images), "loop_s": loop, "setup_s": setup}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
