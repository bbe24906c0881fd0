"""One epoch of training, and validation on whole held-out training images."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vesselcli import metrics
from vesselcli.preprocess import Preprocessing, prepare, resize_image

from .data import Sample
from .ema import WeightAverage

LEVELS = 256  # probability histogram bins used for thresholds and AUC


def vessel_loss(logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor, kind: str) -> torch.Tensor:
    """BCE inside the FOV, plus soft Dice (over the batch, inside the FOV) for ``bce+dice``.

    The Dice term counters the 1:9 vessel/background imbalance that pushes plain BCE towards
    thin vessels being dropped.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * fov).sum() / fov.sum().clamp_min(1.0)
    if kind == "bce":
        return bce
    prob = torch.sigmoid(logits) * fov
    inter = (prob * target).sum()
    soft_dice = (2 * inter + 1.0) / (prob.sum() + (target * fov).sum() + 1.0)
    return bce + (1.0 - soft_dice)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@dataclass
class EpochStats:
    loss: float
    steps: int
    patches: int
    seconds: float


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    device: torch.device,
    loss_kind: str,
    autocast_dtype: torch.dtype | None,
    scaler,
    step: int,
    max_steps: int,
    on_step: Callable[[int, float], None],
    ema: WeightAverage | None = None,
) -> tuple[EpochStats, int]:
    model.train()
    start = time.perf_counter()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, patches
    steps = 0
    for x, y, fov in loader:
        if max_steps and step >= max_steps:
            break
        x, y, fov = (t.to(device, non_blocking=True) for t in (x, y, fov))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        loss = vessel_loss(logits, y, fov, loss_kind)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update()
        step += 1
        steps += 1
        total += torch.tensor([loss.item() * x.shape[0], x.shape[0]], dtype=torch.float64, device=device)
        on_step(step, loss.item())
    all_reduce_sum(total)
    seconds = time.perf_counter() - start
    mean_loss = float(total[0] / total[1]) if total[1] > 0 else float("nan")
    return EpochStats(mean_loss, steps, int(total[1]), seconds), step


@torch.no_grad()
def predict_probability(model: torch.nn.Module, sample: Sample, pre: Preprocessing, device: torch.device) -> np.ndarray:
    """Whole-image vessel probability ``(H, W) float32`` at the sample's original size."""
    x, _ = prepare(sample.rgb, sample.fov, pre)
    logits = model(torch.from_numpy(x)[None].to(device))
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    return resize_image(prob, sample.rgb.shape[:2])


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: list[Sample], pre: Preprocessing, device: torch.device, rank: int, world: int) -> dict:
    """Validation figures inside the FOV at original size, pooled over all ranks.

    Each rank scores every ``world``-th image; probability histograms of vessel and background
    pixels are all-reduced, from which IoU/Dice at 0.5, the best-F1 threshold and AUC follow.
    """
    model.eval()
    hist = torch.zeros(2, LEVELS, dtype=torch.float64, device=device)
    for sample in samples[rank::world]:
        prob = predict_probability(model, sample, pre, device)
        bins = np.clip((prob[sample.fov] * (LEVELS - 1)).round().astype(np.int64), 0, LEVELS - 1)
        truth = sample.vessels[sample.fov]
        hist[0] += torch.from_numpy(np.bincount(bins[truth], minlength=LEVELS)).to(device)
        hist[1] += torch.from_numpy(np.bincount(bins[~truth], minlength=LEVELS)).to(device)
    all_reduce_sum(hist)
    return figures_from_histograms(hist[0].cpu().numpy(), hist[1].cpu().numpy())


def counts_at(pos: np.ndarray, neg: np.ndarray, level: int) -> metrics.Counts:
    """Confusion counts when pixels in bins >= ``level`` are called vessel."""
    tp, fp = int(pos[level:].sum()), int(neg[level:].sum())
    return metrics.Counts(tp=tp, fp=fp, fn=int(pos.sum()) - tp, tn=int(neg.sum()) - fp)


def figures_from_histograms(pos: np.ndarray, neg: np.ndarray) -> dict:
    half = (LEVELS - 1 + 1) // 2  # bin of probability 0.5 (rounded), i.e. prob >= ~0.5
    at_half = counts_at(pos, neg, half)
    f1s = [metrics.dice(counts_at(pos, neg, k)) for k in range(1, LEVELS)]
    best = 1 + int(np.argmax(f1s))
    at_best = counts_at(pos, neg, best)
    # AUC from the histograms: P(score_pos > score_neg) + half the ties.
    neg_below = np.concatenate([[0], np.cumsum(neg)[:-1]])
    auc = float((pos * (neg_below + neg / 2)).sum() / max(pos.sum() * neg.sum(), 1))
    return {
        "iou": metrics.iou(at_half),
        "dice": metrics.dice(at_half),
        "best_threshold": best / (LEVELS - 1),
        "best_iou": metrics.iou(at_best),
        "best_dice": metrics.dice(at_best),
        "auc": auc,
    }
