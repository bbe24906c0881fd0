"""Train the vessel U-Net, on one process or with DistributedDataParallel.

One process (CPU or one GPU):
    python -m train --data ../shared/data/DRIVE --out runs/drive
Four GPUs on one machine (NCCL):
    torchrun --standalone --nproc_per_node=4 -m train --data ../shared/data/DRIVE --out runs/drive
Two CPU processes (gloo), e.g. to test DDP without a GPU:
    torchrun --standalone --nproc_per_node=2 -m train --device cpu --data ... --out ...
Several nodes (run on each node, with its own --node_rank):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST:29500 -m train --data ... --out ...
The report's configuration: python -m train --config train/configs/report.toml --data ...

DDP is detected from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK).
``--batch-size`` is per process; the effective batch is batch size x world size.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from vesselcli import __version__
from vesselcli.network.checkpoint import read_checkpoint, save_checkpoint
from vesselcli.imaging.preprocess import Preprocessing
from vesselcli.network.unet import UNet, UNetConfig, count_parameters

from .data import PatchDataset, Sample, leave_out, load_samples, repackage, split_validation
from .ema import WeightAverage
from .loop import evaluate, train_one_epoch
from .options import TrainConfig, parse_args
from .progress import Progress
from .widen import NOISE as WIDEN_NOISE, widen


def setup_distributed(device_option: str) -> tuple[bool, int, int, int, torch.device]:
    """(ddp, rank, local rank, world size, device) from torchrun's environment."""
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "RANK" in os.environ
    want_cuda = device_option == "cuda" or (device_option == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but PyTorch sees no CUDA device; use --device cpu")
    if not ddp:
        return False, 0, 0, 1, torch.device("cuda" if want_cuda else "cpu")
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return True, rank, local_rank, world, device


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "constant":
        return None
    warmup = min(200, max(1, total_steps // 20))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class Distributed:
    """Where this process runs: DDP or not, its rank among ``world`` processes, its device."""

    ddp: bool
    rank: int
    world: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass
class TrainingData:
    """The patch dataset, its sampler and loader, the validation images and a description."""

    dataset: PatchDataset
    sampler: DistributedSampler | RandomSampler
    loader: DataLoader
    val_samples: list[Sample]
    description: list[str]


@dataclass
class Trainer:
    """The model (``net``: DDP-wrapped or not; ``raw_model``: the bare UNet) and its optimisation."""

    net: torch.nn.Module
    raw_model: UNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    total_steps: int


@dataclass
class Position:
    """Where the loop starts: first epoch, optimiser steps taken, best validation so far."""

    epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"iou": -1.0})


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    ddp, rank, _, world, device = setup_distributed(cfg.device)
    where = Distributed(ddp, rank, world, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(sample_seed(cfg) + rank)  # per-rank seeds: dropout/augmentation differ per rank
    pre = Preprocessing(fov_diameter=cfg.fov_diameter, channel=cfg.channel)
    model_args = UNetConfig(in_channels=2 if cfg.camera_channel else 1, base_channels=cfg.base_channels, depth=cfg.depth, norm=cfg.norm, padding=cfg.padding)
    data = build_data(cfg, pre, where)
    trainer = build_trainer(cfg, model_args, where, steps_per_epoch=len(data.loader))
    position, state = Position(), None
    if cfg.init and not cfg.resume:
        trainer.raw_model.load_state_dict(initial_weights(cfg, model_args, where.master))
    if cfg.resume:
        state = read_checkpoint(cfg.resume)
        position = resume(trainer, state)
    ema = weight_average(cfg, trainer.raw_model, state)
    if where.master:
        announce(cfg, where, data, trainer)
    train_epochs(cfg, pre, model_args, where, data, trainer, ema, position)
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def build_data(cfg: TrainConfig, pre: Preprocessing, where: Distributed) -> TrainingData:
    """Load the images, split off validation (then re-package, if asked), make the loader."""
    samples = load_samples([Path(d) for d in cfg.data])
    train_samples, val_samples = split_validation(samples, cfg.val_fraction, cfg.seed)
    description = [f"{Path(d).resolve().name}: {n} training / {m} validation images" for d, n, m in _split_counts(cfg.data, train_samples, val_samples)]
    if cfg.leave_out:
        try:
            train_samples, left = leave_out(train_samples, cfg.leave_out)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        description.append(f"left out of training ({' '.join(cfg.leave_out)}): {len(left)} images, {', '.join(s.name for s in left)}")
    if cfg.repackage:  # the split is made first, so no image is on both sides in any form
        train_samples += [repackage(s, cfg.repackage) for s in train_samples]
        val_samples += [repackage(s, cfg.repackage) for s in val_samples]
        description.append(f"each also re-packaged to {cfg.repackage}x{cfg.repackage} as DRIVE-512 (bilinear, annotation binarised at 127)")
    if cfg.data_weights:
        train_samples = weighted(train_samples, cfg.data, cfg.data_weights)
        description.append("training images weighted " + ", ".join(f"{Path(d).name} x{w}" for d, w in zip(cfg.data, cfg.data_weights)))
    dataset = PatchDataset(train_samples, pre, cfg.patch, cfg.samples_per_image, sample_seed(cfg), tuple(cfg.calibre_range) or None,
                           cfg.min_factor, cfg.camera_channel)
    if where.ddp:
        sampler = DistributedSampler(dataset, shuffle=True, seed=sample_seed(cfg))
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(sample_seed(cfg)))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=True, pin_memory=where.device.type == "cuda")
    return TrainingData(dataset, sampler, loader, val_samples, description)


def build_trainer(cfg: TrainConfig, model_args: UNetConfig, where: Distributed, steps_per_epoch: int) -> Trainer:
    """A fresh model on the device (DDP-wrapped under torchrun), Adam, the schedule, mixed precision."""
    # channels-last is faster for these convolutions on both CPU (oneDNN) and CUDA.
    model = UNet(model_args).to(where.device).to(memory_format=torch.channels_last)
    if where.ddp:
        net = DistributedDataParallel(model, device_ids=[where.device.index] if where.device.type == "cuda" else None)
    else:
        net = model
    raw_model = net.module if where.ddp else net
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    autocast_dtype, scaler = mixed_precision(where.device)
    return Trainer(net, raw_model, optimizer, scheduler, autocast_dtype, scaler, total_steps)


def mixed_precision(device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype, gradient scaler): bfloat16 on CUDA where supported, else float16 with a
    scaler; full float32 on the CPU."""
    if device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def sample_seed(cfg: TrainConfig) -> int:
    """The seed of the patches, their order and the initial weights (``--sample-seed``, else ``--seed``)."""
    return cfg.seed if cfg.sample_seed < 0 else cfg.sample_seed


def with_inputs(weights: dict, in_channels: int) -> dict:
    """A state dict whose first convolution takes ``in_channels`` planes: the checkpoint's own
    first, the new ones with zero weights, so the network computes what it did."""
    first = next(k for k, v in weights.items() if v.ndim == 4)
    old = weights[first]
    pad = torch.zeros((old.shape[0], in_channels - old.shape[1], *old.shape[2:]), dtype=old.dtype)
    return {**weights, first: torch.cat([old, pad], dim=1)}


def initial_weights(cfg: TrainConfig, model_args: UNetConfig, master: bool) -> dict:
    """``--init``'s weights for ``model_args``; a narrower checkpoint is widened first."""
    init = read_checkpoint(cfg.init)
    init_args = UNetConfig.from_dict(init["model_args"])
    weights = init["model"]
    if init_args == model_args:
        return weights
    if {**init_args.to_dict(), "in_channels": model_args.in_channels} == model_args.to_dict() and init_args.in_channels < model_args.in_channels:
        if master:
            print(f"--init: {model_args.in_channels - init_args.in_channels} input plane(s) added with zero weights (the same function)", flush=True)
        return with_inputs(weights, model_args.in_channels)
    # A narrower checkpoint is widened so the wider model starts as the same function.
    narrower = UNet(init_args)
    narrower.load_state_dict(weights)
    try:
        weights = widen(narrower, model_args, noise=WIDEN_NOISE, seed=cfg.seed).state_dict()
    except ValueError as exc:
        raise SystemExit(f"--init {cfg.init}: its model ({init_args.to_dict()}) cannot start the one asked for ({model_args.to_dict()}): {exc}") from None
    if master:
        print(f"--init: widened {init_args.base_channels} to {model_args.base_channels} base channels (Net2WiderNet, noise {WIDEN_NOISE})", flush=True)
    return weights


def resume(trainer: Trainer, state: dict) -> Position:
    """Load ``--resume``'s weights, optimiser and schedule; where its run stopped."""
    trainer.raw_model.load_state_dict(state.get("train_model", state["model"]))
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state.get("scheduler"):
        trainer.scheduler.load_state_dict(state["scheduler"])
    return Position(int(state["epoch"]) + 1, int(state["step"]), dict(state.get("best", {"iou": -1.0})))


def weight_average(cfg: TrainConfig, raw_model: UNet, state: dict | None) -> WeightAverage | None:
    """The ``--ema`` average (restored from a resumed checkpoint that has one), or None.

    With ``--ema`` the average is what is validated, kept and shipped (checkpoint "model");
    the raw weights the optimiser moves travel as "train_model" for ``--resume``.
    """
    if not cfg.ema:
        return None
    ema = WeightAverage(raw_model, cfg.ema)
    if state is not None and "train_model" in state:
        ema.load_state_dict(state["model"])
    return ema


def announce(cfg: TrainConfig, where: Distributed, data: TrainingData, trainer: Trainer) -> None:
    """Create OUT, write its config.json and print the run's one-line description."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    print(
        f"world size {where.world} ({'DDP ' + dist.get_backend() if where.ddp else 'single process'}), device {where.device}, "
        f"batch {cfg.batch_size} per process ({cfg.batch_size * where.world} in all), {len(data.loader)} steps/epoch, "
        f"{count_parameters(trainer.raw_model):,} parameters; data: {'; '.join(data.description)}",
        flush=True,
    )


def train_epochs(
    cfg: TrainConfig, pre: Preprocessing, model_args: UNetConfig, where: Distributed, data: TrainingData,
    trainer: Trainer, ema: WeightAverage | None, position: Position,
) -> None:
    """Epochs until ``--epochs`` or ``--max-steps``: train, validate, then rank 0 checkpoints."""
    progress = Progress(enabled=where.master, total_steps=trainer.total_steps, start_step=position.step)
    epoch, step, best = position.epoch, position.step, position.best
    with progress:
        while epoch < cfg.epochs and not (cfg.max_steps and step >= cfg.max_steps):
            if where.ddp:
                data.sampler.set_epoch(epoch)
            data.dataset.set_epoch(epoch)
            stats, step = train_one_epoch(
                trainer.net, data.loader, trainer.optimizer, trainer.scheduler, where.device, cfg.loss,
                trainer.autocast_dtype, trainer.scaler, step, cfg.max_steps,
                on_step=lambda s, loss: progress.update(s, loss, epoch, cfg.batch_size * where.world), ema=ema,
            )
            last_epoch = epoch + 1 >= cfg.epochs or bool(cfg.max_steps and step >= cfg.max_steps)
            val = {}
            if data.val_samples and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
                val = evaluate(ema.model if ema else trainer.raw_model, data.val_samples, pre, where.device, where.rank, where.world,
                               cfg.min_factor, cfg.camera_channel)
            improved = bool(val) and val["iou"] > best["iou"]
            if improved:
                best = {"iou": val["iou"], "epoch": epoch, **{f"val_{k}": v for k, v in val.items()}}
            if where.master:
                payload = _payload(trainer.raw_model, ema, model_args, pre, cfg, data.description, val, best, epoch, step, trainer.optimizer, trainer.scheduler)
                save_checkpoints(Path(cfg.out), payload, best=improved or not data.val_samples)
                _append_metrics(Path(cfg.out) / "metrics.csv", epoch, step, stats, val, trainer.optimizer.param_groups[0]["lr"])
                progress.epoch_done(epoch, stats, val, best)
            epoch += 1


def save_checkpoints(out: Path, payload: dict, best: bool) -> None:
    """``last.pt`` every epoch; ``best.pt`` too when validation improved (or there is none)."""
    save_checkpoint(out / "last.pt", payload)
    if best:
        save_checkpoint(out / "best.pt", payload)


def weighted(samples: list, roots: tuple[str, ...], weights: tuple[int, ...]) -> list:
    """``samples`` with each image of the i-th root (and its re-packaged copy) ``weights[i]`` times."""
    times = {Path(root).name: w for root, w in zip(roots, weights)}
    return [s for s in samples for _ in range(times.get(s.name.split("/")[0], 1))]


def _split_counts(roots, train_samples, val_samples):
    for root in roots:
        name = Path(root).name
        yield root, sum(s.name.startswith(name + "/") for s in train_samples), sum(s.name.startswith(name + "/") for s in val_samples)


def _payload(model, ema, model_args, pre, cfg, data_desc, val, best, epoch, step, optimizer, scheduler) -> dict:
    threshold = float(val.get("best_threshold", 0.5)) if val else 0.5
    def on_cpu(module) -> dict:
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}

    extra = {"train_model": on_cpu(model)} if ema is not None else {}
    return {
        "version": __version__,
        "model": on_cpu(ema.model if ema is not None else model),
        **extra,
        "model_args": model_args.to_dict(),
        "preprocessing": pre.to_dict(),
        "threshold": threshold,
        "data": data_desc,
        "metrics": {f"val_{k}": float(v) for k, v in val.items()},
        "best": best,
        "epoch": epoch,
        "step": step,
        "config": cfg.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _append_metrics(path: Path, epoch: int, step: int, stats, val: dict, lr: float) -> None:
    columns = ["epoch", "step", "train_loss", "patches", "seconds", "lr", "val_iou", "val_dice", "val_best_threshold", "val_best_iou", "val_best_dice", "val_auc"]
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(columns)
        row = [epoch, step, f"{stats.loss:.5f}", stats.patches, f"{stats.seconds:.1f}", f"{lr:.3g}"]
        row += [f"{val[k]:.5f}" if k in val else "" for k in ("iou", "dice", "best_threshold", "best_iou", "best_dice", "auc")]
        writer.writerow(row)


if __name__ == "__main__":
    sys.exit(main())
