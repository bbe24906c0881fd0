"""Widen a trained U-Net without changing what it computes (Net2WiderNet, Chen et al. 2016).

Used by ``--init`` when the checkpoint has fewer base channels than the model asked for: the
wider network starts as the narrower one, and fine-tuning spends the new capacity.

Every level's channels are mapped onto the old ones: the first ``old`` channels are
themselves, each extra channel copies a randomly chosen old one (its incoming weights, bias
and batch-norm statistics). A layer that reads a widened tensor divides the weights of each
copy by the number of copies, so the sum it computes is unchanged. Batch norm is per channel,
so copies stay exact in training mode too. ``noise`` (relative to each layer's weight spread)
breaks the symmetry between a channel and its copies, which would otherwise get identical
gradients forever.
"""
from __future__ import annotations

import torch
from torch import nn

from vesselcli.network.unet import UNet, UNetConfig

#: Relative weight noise ``--init`` widens with: enough for copies to part ways, small next to
#: the weights (widening the shipped model 16 -> 20 moved its probabilities on a random input
#: by 0.04 at most).
NOISE = 0.01


def widen(old: UNet, config: UNetConfig, noise: float = 0.0, seed: int = 0) -> UNet:
    """A ``UNet(config)`` computing the same function as ``old`` (up to ``noise``).

    ``config`` may differ from ``old.config`` only in ``base_channels``, which must not shrink.
    """
    base = old.config
    if {**base.to_dict(), "base_channels": config.base_channels} != config.to_dict():
        raise ValueError(f"can only widen: {base.to_dict()} and {config.to_dict()} differ in more than base_channels")
    if config.base_channels < base.base_channels:
        raise ValueError(f"cannot narrow {base.base_channels} base channels to {config.base_channels}")
    generator = torch.Generator().manual_seed(seed)
    old_widths = [base.base_channels * 2**i for i in range(base.depth + 1)]
    maps = [_channel_map(w, config.base_channels * 2**i, generator) for i, w in enumerate(old_widths)]
    new = UNet(config)
    with torch.no_grad():
        previous = torch.arange(base.in_channels)
        for level, (a, b) in enumerate(zip(old.down, new.down)):
            _copy_double_conv(a, b, previous, maps[level])
            previous = maps[level]
        _copy_double_conv(old.bottleneck, new.bottleneck, previous, maps[-1])
        for k, (up_a, up_b, conv_a, conv_b) in enumerate(zip(old.up, new.up, old.up_conv, new.up_conv)):
            low, level = base.depth - k, base.depth - 1 - k
            _copy_layer(up_a, up_b, maps[low], maps[level])
            # The decoder reads cat([skip, upsampled]): old channels [0, w) then [w, 2w).
            joined = torch.cat([maps[level], maps[level] + old_widths[level]])
            _copy_double_conv(conv_a, conv_b, joined, maps[level])
        _copy_layer(old.head, new.head, maps[0], torch.arange(1))
        if noise:
            for module in new.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    w = module.weight
                    w.add_(torch.randn(w.shape, generator=generator) * noise * float(w.std()))
    return new


def _channel_map(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """Old channel index of each new channel: itself for the first ``old``, then random copies."""
    return torch.cat([torch.arange(old), torch.randint(0, old, (new - old,), generator=generator)])


def _copy_double_conv(a: nn.Sequential, b: nn.Sequential, in_map: torch.Tensor, out_map: torch.Tensor) -> None:
    for layer_a, layer_b in zip(a, b):
        if isinstance(layer_a, nn.Conv2d):
            _copy_layer(layer_a, layer_b, in_map, out_map)
            in_map = out_map
        elif isinstance(layer_a, nn.BatchNorm2d):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(layer_b, name).copy_(getattr(layer_a, name)[out_map])
            layer_b.num_batches_tracked.copy_(layer_a.num_batches_tracked)


def _copy_layer(a: nn.Module, b: nn.Module, in_map: torch.Tensor, out_map: torch.Tensor) -> None:
    """Copy a (transposed) convolution reading ``in_map`` channels and writing ``out_map`` ones."""
    copies = torch.bincount(in_map).to(a.weight.dtype)[in_map]
    if isinstance(a, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
        b.weight.copy_(a.weight[in_map][:, out_map] / copies[:, None, None, None])
    else:  # weight (out, in, kh, kw)
        b.weight.copy_(a.weight[out_map][:, in_map] / copies[None, :, None, None])
    if a.bias is not None:
        b.bias.copy_(a.bias[out_map])
