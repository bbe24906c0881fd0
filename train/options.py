"""Training options: command line, optionally seeded from a config file of the same options."""
from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...] = ()
    out: str = "runs/default"
    epochs: int = 100
    max_steps: int = 0  # 0: no limit
    batch_size: int = 4  # per process (per GPU)
    lr: float = 1e-4
    schedule: str = "cosine"  # "cosine" | "constant"
    weight_decay: float = 0.0
    loss: str = "bce+dice"  # "bce" | "bce+dice"
    patch: int = 256
    samples_per_image: int = 8
    val_fraction: float = 0.2
    val_every: int = 1
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    workers: int = 1
    seed: int = 0
    # Seed of the patches, their order and the weights' random start; -1: --seed. Another value
    # repeats a run on the same validation split (--seed draws it) to measure the runs' spread.
    sample_seed: int = -1
    resume: str = ""
    init: str = ""  # start from this checkpoint's weights (fine-tuning); fresh optimizer and schedule
    ema: float = 0.0  # validate, keep and ship an exponential moving average of the weights with this decay; 0: off
    repackage: int = 0  # also train/validate on every image squashed to N x N as DRIVE-512 was made; 0: off
    threads: int = 0  # CPU threads per process; 0: PyTorch's default
    # Multi-scale: draw each patch at a scale giving its vessels a mean width (pixels) in this
    # [lo, hi] range, from the image's annotated calibre; empty: the FOV rule with +-25% jitter.
    calibre_range: tuple[float, ...] = ()
    # Draw patches (and validate) at the FOV rule's factor or this one where that is smaller:
    # 0.5 trains every photograph at the scale segment's calibre rule runs it (never shrunk more
    # than 2x, vesselcli.imaging.calibre.MIN_FACTOR); 0: the FOV rule alone. Ignored with calibre_range.
    min_factor: float = 0.0
    # A second input plane telling the network its camera's resolution: this many times log2 of the
    # photograph's FOV diameter over fov_diameter, the same over the whole input (at 1: DRIVE about
    # 0, CHASE_DB1 about 0.8, HRF about 2.6; train.data.camera_value); 0: no plane. An experiment
    # (issue 15): segment does not feed it.
    camera_channel: float = 0.0
    # Training images of the i-th --data root appear data_weights[i] times in each epoch's
    # patches (validation unchanged); empty: once each.
    data_weights: tuple[int, ...] = ()
    # Training images whose name (root folder / file, e.g. "HRF/01_g.jpg") matches one of these
    # shell patterns are left out of training; validation is split first and keeps its images.
    leave_out: tuple[str, ...] = ()
    # Model
    base_channels: int = 16
    depth: int = 3
    norm: str = "batch"
    padding: str = "same"
    # Preprocessing
    fov_diameter: float = 540.0
    channel: str = "green"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = list(self.data)
        d["calibre_range"] = list(self.calibre_range)
        d["data_weights"] = list(self.data_weights)
        d["leave_out"] = list(self.leave_out)
        return d


def _read_config_file(path: str) -> dict:
    p = Path(path)
    text = p.read_text()
    data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    return {k.replace("-", "_"): v for k, v in data.items()}


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train the vessel U-Net (one process, or DDP under torchrun).",
    )
    defaults = TrainConfig()
    parser.add_argument("--config", help="TOML or JSON file with any of these options (command line wins)")
    parser.add_argument("--data", action="append", help="dataset root (DRIVE, CHASE_DB1 or images+masks); repeat for several")
    for f in fields(TrainConfig):
        if f.name in ("data", "extra"):
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data_weights":
            parser.add_argument(flag, type=int, nargs="+", metavar="W", default=None,
                                help="one whole number per --data, in the same order (default: 1 each)")
        elif f.name == "leave_out":
            parser.add_argument(flag, nargs="+", metavar="GLOB", default=None,
                                help="leave training images matching these patterns out of training, e.g. 'HRF/*_g.*' "
                                     "(validation keeps its images)")
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=float, nargs=2, metavar=("LO", "HI"), default=None, help="default: off")
        else:
            parser.add_argument(flag, type=type(default), default=None, help=f"default: {default}")
    args = parser.parse_args(argv)
    values = asdict(defaults)
    if args.config:
        file_values = _read_config_file(args.config)
        unknown = set(file_values) - set(values)
        if unknown:
            parser.error(f"unknown option(s) in {args.config}: {', '.join(sorted(unknown))}")
        values.update(file_values)
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            values[key] = value
    values["data"] = tuple(values["data"] or ())
    values["calibre_range"] = tuple(float(v) for v in values["calibre_range"] or ())
    if values["calibre_range"] and not (len(values["calibre_range"]) == 2 and 0 < values["calibre_range"][0] < values["calibre_range"][1]):
        parser.error(f"calibre_range must be two widths in pixels, lo < hi (e.g. [1.0, 5.0]), got {list(values['calibre_range'])}")
    values["data_weights"] = tuple(int(v) for v in values["data_weights"] or ())
    values["leave_out"] = tuple(str(v) for v in values["leave_out"] or ())
    if values["data_weights"] and (len(values["data_weights"]) != len(values["data"]) or min(values["data_weights"]) < 1):
        parser.error(f"data_weights needs one whole number >= 1 per --data ({len(values['data'])}), got "
                     f"{list(values['data_weights'])}")
    if not values["data"]:
        parser.error("--data is required (a DRIVE, CHASE_DB1 or images+masks root)")
    if not 0.0 <= values["min_factor"] <= 4.0:
        parser.error(f"--min-factor must be between 0 (off) and 4, got {values['min_factor']}")
    if values["loss"] not in ("bce", "bce+dice"):
        parser.error(f"--loss must be 'bce' or 'bce+dice', got {values['loss']!r}")
    if values["schedule"] not in ("cosine", "constant"):
        parser.error(f"--schedule must be 'cosine' or 'constant', got {values['schedule']!r}")
    if values["ema"] and not 0.0 < values["ema"] < 1.0:
        parser.error(f"--ema must be 0 (off) or a decay between 0 and 1 such as 0.999, got {values['ema']}")
    return TrainConfig(**values)
