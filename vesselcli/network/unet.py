"""The U-Net, shared by training, export and the PyTorch engine (the only model module
that imports torch; the ONNX Runtime path never loads it).

Encoder: per level two 3x3 convolutions + ReLU, then 2x2 max pooling, channels doubled per
level. Bottleneck: two 3x3 convolutions. Decoder: 2x2 transposed convolution halving the
channels, concatenation with the (centre-cropped) skip, two 3x3 convolutions. A 1x1
convolution gives one vessel logit per pixel.

``padding="valid"`` is the report's network (Ronneberger et al.): unpadded convolutions and
centre-cropped skips; ``forward`` pads the input by the network's margin (reflection) so the
output has the input's size. ``padding="same"`` pads every convolution. Either way
``forward`` maps ``(N, C, H, W) float32`` to ``(N, 1, H, W)`` logits for any H and W.
``core`` is the network without that padding: a valid network's output is then smaller than
its input (324x324 for a 512x512 input at depth 4), as the report ran it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Model arguments; stored in every checkpoint so the network can be rebuilt from it."""

    in_channels: int = 1
    base_channels: int = 16
    depth: int = 3
    norm: str = "batch"  # "batch" | "none"
    padding: str = "same"  # "same" | "valid"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


#: The report's network: 64 base channels, 4 poolings, valid convolutions, no normalisation.
REPORT_CONFIG = UNetConfig(in_channels=1, base_channels=64, depth=4, norm="none", padding="valid")


def _double_conv(cin: int, cout: int, norm: str, pad: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=pad, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def valid_output_size(size: int, depth: int) -> int:
    """Output length of the valid U-Net for an input length, or -1 if pooling would be odd."""
    s = size
    for _ in range(depth):
        s -= 4
        if s <= 0 or s % 2:
            return -1
        s //= 2
    s -= 4
    if s <= 0:
        return -1
    for _ in range(depth):
        s = 2 * s - 4
    return s


def valid_input_size(size: int, depth: int) -> tuple[int, int]:
    """Smallest valid-U-Net input length whose output covers ``size`` pixels of interest.

    Returns (input length, margin): output pixel ``j`` sees input pixel ``j + margin``.
    """
    n = size
    while True:
        out = valid_output_size(n, depth)
        if out >= size:
            margin = (n - out) // 2
            # The margin is fixed by the architecture; pad so that output covers [0, size).
            if out - size >= 0:
                return n, margin
        n += 1


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        if config.norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {config.norm!r}")
        if config.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {config.padding!r}")
        if config.depth < 1:
            raise ValueError(f"depth must be at least 1, got {config.depth}")
        self.config = config
        pad = 1 if config.padding == "same" else 0
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(cin, w, config.norm, pad))
            cin = w
        self.bottleneck = _double_conv(widths[-2], widths[-1], config.norm, pad)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w_low, w in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.up.append(nn.ConvTranspose2d(w_low, w, 2, stride=2))
            self.up_conv.append(_double_conv(2 * w, w, config.norm, pad))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def _padded_input(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pad so the core network can run and its output covers the input; return offset."""
        height, width = x.shape[-2:]
        depth = self.config.depth
        if self.config.padding == "same":
            multiple = 2**depth
            ph, pw = (-height) % multiple, (-width) % multiple
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            return x, 0
        in_h, margin = valid_input_size(height, depth)
        in_w, _ = valid_input_size(width, depth)
        pads = (margin, in_w - width - margin, margin, in_h - height - margin)
        mode = "reflect" if max(pads) < min(height, width) else "replicate"
        return F.pad(x, pads, mode=mode), margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x, _ = self._padded_input(x)
        return self.core(x)[..., :height, :width]

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """The layers alone, no input padding: ``(N, C, H, W)`` -> ``(N, 1, h, w)`` logits.

        'same' networks need H and W divisible by ``2**depth`` (then h, w = H, W); valid
        networks give a smaller centred output (pooling floors odd sizes, skips are
        centre-cropped to match).
        """
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = up(x)
            if skip.shape[-2:] != x.shape[-2:]:
                skip = _centre_crop(skip, x.shape[-2], x.shape[-1])
            x = conv(torch.cat([skip, x], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
