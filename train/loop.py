"""One epoch of training, and validation on whole held-out training images."""
from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vesselcli.analysis import metrics
from vesselcli.imaging.preprocess import Preprocessing, prepare_at, resize_image, scale_factor

from .data import Sample, camera_value, with_camera_plane
from .ema import WeightAverage

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
def predict_probability(model: torch.nn.Module, sample: Sample, pre: Preprocessing, device: torch.device,
                        min_factor: float = 0.0, camera: float = 0.0) -> np.ndarray:
    """Whole-image vessel probability ``(H, W) float32`` at the sample's original size, the
    network run at the FOV rule's factor, or ``min_factor`` where that is smaller; with
    ``camera`` (not 0), ``camera_value`` at that scale as a plane beside the input (``--camera-channel``)."""
    x, _ = prepare_at(sample.rgb, sample.fov, pre, max(scale_factor(sample.fov, pre), min_factor))
    if camera:
        x = with_camera_plane(x, camera_value(sample.fov, pre, camera))
    logits = model(torch.from_numpy(x)[None].to(device))
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    return resize_image(prob, sample.rgb.shape[:2])


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: list[Sample], pre: Preprocessing, device: torch.device, rank: int, world: int,
             min_factor: float = 0.0, camera: float = 0.0) -> dict:
    """Validation figures inside the FOV at original size, pooled over all ranks (each image
    processed as ``predict_probability`` with ``min_factor`` does).

    Each rank scores every ``world``-th image. Vessel and background pixel counts per level
    (``metrics.level_histograms`` at the 65,536 levels of ``metrics.AUC_LEVELS``) and the
    confusion counts at 0.5 are all-reduced; the figures follow from them with
    ``vesselcli.analysis.metrics``, the code ``score`` uses, so the stored best threshold gives, when
    applied as ``prob >= threshold``, the Dice measured here.
    """
    model.eval()
    levels = metrics.AUC_LEVELS
    pooled = torch.zeros(2 * levels + 4, dtype=torch.float64, device=device)
    for sample in samples[rank::world]:
        prob = predict_probability(model, sample, pre, device, min_factor, camera)
        pos_hist, neg_hist = metrics.level_histograms(prob, sample.vessels, sample.fov, levels)
        at_half = metrics.confusion(prob >= 0.5, sample.vessels, sample.fov)
        counts = np.concatenate([pos_hist, neg_hist, astuple(at_half)]).astype(np.float64)
        pooled += torch.from_numpy(counts).to(device)
    all_reduce_sum(pooled)
    totals = pooled.cpu().numpy().round().astype(np.int64)  # float64 sums of counts: exact below 2**53
    return validation_figures(totals[:levels], totals[levels : 2 * levels], metrics.Counts(*map(int, totals[2 * levels :])))


def validation_figures(pos_hist: np.ndarray, neg_hist: np.ndarray, at_half: metrics.Counts) -> dict:
    """IoU/Dice at 0.5, the best-F1 threshold (one of ``k / 255``) with its IoU/Dice, and AUC.

    ``pos_hist``/``neg_hist``: ``(65536,)`` vessel/background counts per level as
    ``metrics.level_histograms`` makes them at ``metrics.AUC_LEVELS``. The threshold is chosen
    among the 256 levels of an 8-bit map (as ``score`` does); AUC is that of the map quantised
    to 16 bits (within about 1e-5 of the exact AUC of the float map).
    """
    levels = metrics.THRESHOLD_LEVELS
    pos, neg = metrics.merge_levels(pos_hist, levels), metrics.merge_levels(neg_hist, levels)
    level, _ = metrics.best_level_f1(pos, neg)
    at_best = metrics.counts_at_level(pos, neg, level)
    return {
        "iou": metrics.iou(at_half),
        "dice": metrics.dice(at_half),
        "best_threshold": metrics.level_threshold(level, levels),
        "best_iou": metrics.iou(at_best),
        "best_dice": metrics.dice(at_best),
        "auc": metrics.histogram_auc(pos_hist, neg_hist),
    }
