"""Exponential moving average of a model's weights (and its batch-norm statistics).

Validation on a handful of images swings by about 0.01 IoU from one epoch to the next, so
the best checkpoint of the raw weights is partly a lucky spike. The average of the weights
over the last ~1/(1-decay) steps is a smoother, usually better model; with ``--ema`` it is
the one validated, kept and shipped.
"""
from __future__ import annotations

import copy

import torch


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every optimiser step.

    Floating-point parameters and buffers (batch-norm running mean and variance) are
    averaged; integer buffers (batch counters) are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.source = model  # the unwrapped model the optimiser moves (not its DDP wrapper)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        current = self.source.state_dict()
        for name, average in self.model.state_dict().items():
            value = current[name].detach()
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 - self.decay)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
