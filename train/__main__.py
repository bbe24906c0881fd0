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
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from vesselcli import __version__
from vesselcli.checkpoint import read_checkpoint, save_checkpoint
from vesselcli.preprocess import Preprocessing
from vesselcli.unet import UNet, UNetConfig, count_parameters

from .data import PatchDataset, load_samples, repackage, split_validation
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


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    ddp, rank, _, world, device = setup_distributed(cfg.device)
    master = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)  # per-rank seeds: dropout/augmentation differ per rank
    out = Path(cfg.out)
    pre = Preprocessing(fov_diameter=cfg.fov_diameter, channel=cfg.channel)
    model_args = UNetConfig(in_channels=1, base_channels=cfg.base_channels, depth=cfg.depth, norm=cfg.norm, padding=cfg.padding)

    samples = load_samples([Path(d) for d in cfg.data])
    train_samples, val_samples = split_validation(samples, cfg.val_fraction, cfg.seed)
    data_desc = [f"{Path(d).resolve().name}: {n} training / {m} validation images" for d, n, m in _split_counts(cfg.data, train_samples, val_samples)]
    if cfg.repackage:  # the split is made first, so no image is on both sides in any form
        train_samples += [repackage(s, cfg.repackage) for s in train_samples]
        val_samples += [repackage(s, cfg.repackage) for s in val_samples]
        data_desc.append(f"each also re-packaged to {cfg.repackage}x{cfg.repackage} as DRIVE-512 (bilinear, annotation binarised at 127)")
    dataset = PatchDataset(train_samples, pre, cfg.patch, cfg.samples_per_image, cfg.seed, tuple(cfg.calibre_range) or None)
    sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed) if ddp else RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=True, pin_memory=device.type == "cuda")

    # channels-last is faster for these convolutions on both CPU (oneDNN) and CUDA.
    model = UNet(model_args).to(device).to(memory_format=torch.channels_last)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if ddp else model
    raw_model = net.module if ddp else net
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(loader)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    autocast_dtype = None
    scaler = None
    if device.type == "cuda":
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if autocast_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")

    start_epoch, step, best = 0, 0, {"iou": -1.0}
    if cfg.init and not cfg.resume:
        init = read_checkpoint(cfg.init)
        init_args = UNetConfig.from_dict(init["model_args"])
        weights = init["model"]
        if init_args != model_args:
            # A narrower checkpoint is widened so the wider model starts as the same function.
            narrower = UNet(init_args)
            narrower.load_state_dict(weights)
            try:
                weights = widen(narrower, model_args, noise=WIDEN_NOISE, seed=cfg.seed).state_dict()
            except ValueError as exc:
                raise SystemExit(f"--init {cfg.init}: its model ({init_args.to_dict()}) cannot start the one asked for ({model_args.to_dict()}): {exc}") from None
            if master:
                print(f"--init: widened {init_args.base_channels} to {model_args.base_channels} base channels (Net2WiderNet, noise {WIDEN_NOISE})", flush=True)
        raw_model.load_state_dict(weights)
    if cfg.resume:
        state = read_checkpoint(cfg.resume)
        raw_model.load_state_dict(state.get("train_model", state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        best = dict(state.get("best", best))
    # With --ema the average is what is validated, kept and shipped (checkpoint "model");
    # the raw weights the optimiser moves travel as "train_model" for --resume.
    ema = WeightAverage(raw_model, cfg.ema) if cfg.ema else None
    if ema is not None and cfg.resume and "train_model" in state:
        ema.load_state_dict(state["model"])

    if master:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        print(
            f"world size {world} ({'DDP ' + dist.get_backend() if ddp else 'single process'}), device {device}, "
            f"batch {cfg.batch_size} per process ({cfg.batch_size * world} in all), {steps_per_epoch} steps/epoch, "
            f"{count_parameters(raw_model):,} parameters; data: {'; '.join(data_desc)}",
            flush=True,
        )
    metrics_path = out / "metrics.csv"
    progress = Progress(enabled=master, total_steps=total_steps, start_step=step)
    epoch = start_epoch
    with progress:
        while epoch < cfg.epochs and not (cfg.max_steps and step >= cfg.max_steps):
            if ddp:
                sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            stats, step = train_one_epoch(
                net, loader, optimizer, scheduler, device, cfg.loss, autocast_dtype, scaler, step, cfg.max_steps,
                on_step=lambda s, loss: progress.update(s, loss, epoch, cfg.batch_size * world), ema=ema,
            )
            last_epoch = epoch + 1 >= cfg.epochs or bool(cfg.max_steps and step >= cfg.max_steps)
            val = {}
            if val_samples and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
                val = evaluate(ema.model if ema else raw_model, val_samples, pre, device, rank, world)
            improved = bool(val) and val["iou"] > best["iou"]
            if improved:
                best = {"iou": val["iou"], "epoch": epoch, **{f"val_{k}": v for k, v in val.items()}}
            if master:
                payload = _payload(raw_model, ema, model_args, pre, cfg, data_desc, val, best, epoch, step, optimizer, scheduler)
                save_checkpoint(out / "last.pt", payload)
                if improved or not val_samples:
                    save_checkpoint(out / "best.pt", payload)
                _append_metrics(metrics_path, epoch, step, stats, val, optimizer.param_groups[0]["lr"])
                progress.epoch_done(epoch, stats, val, best)
            epoch += 1
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return 0


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
