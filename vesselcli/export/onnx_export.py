"""Export a training checkpoint to ONNX and prove the ONNX model computes what it does.

    export_onnx(checkpoint, out)            -> ModelInfo   (onnx.checker, metadata_props)
    check_parity(onnx, checkpoint, tiles)   -> Parity      (ParityError when broken)
    drive_tiles(drive_root, pre, tile)      -> (N, 1, T, T) float32 real network inputs

'same' models are exported with a dynamic batch and dynamic height and width (multiples of
``2**depth``; ``OnnxRuntimeEngine`` pads other sizes). Valid-convolution models (the
report's) compute their reflection padding from the input size in Python, which does not
trace symbolically, so they are exported for one fixed tile size with a dynamic batch.
Everything ``segment`` needs is stored in ``metadata_props`` (see ``engines.metadata``).
Imports torch and onnx; the inference path never imports this module.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..analysis import metrics
from ..engines.base import ModelInfo, sigmoid
from ..engines.errors import ModelError
from ..engines.metadata import info_from_checkpoint, info_to_metadata
from .errors import ExportError, ParityError
from .tensorrt_engine import MIN_DICE as PLAN_MIN_DICE, Profile, build_plan, validate_plan
from ..run.config import DEFAULT_TILE_SIZE
from ..imaging.preprocess import Preprocessing, prepare

OPSET = 18
#: Largest |logit| difference accepted between ONNX Runtime and PyTorch (both FP32). Measured
#: differences are ~1e-5 for the shipped model; 1e-3 leaves room for other CPUs' kernels while
#: staying far below any change a threshold could see.
LOGIT_ATOL = 1e-3
#: Smallest Dice between the two engines' thresholded masks.
MIN_DICE = 0.999
#: Largest tile side the dynamic ONNX export accepts (pixels).
MAX_SIDE = 4096


@dataclass(frozen=True)
class Case:
    """One parity comparison: a named batch, its worst logit difference and mask Dice."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    dice: float


@dataclass
class Parity:
    cases: list[Case] = field(default_factory=list)
    atol: float = LOGIT_ATOL
    min_dice: float = MIN_DICE

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=0.0)

    @property
    def min_case_dice(self) -> float:
        return min((c.dice for c in self.cases), default=1.0)

    def failures(self) -> list[Case]:
        return [c for c in self.cases if c.max_abs_diff > self.atol or c.dice < self.min_dice]


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks of one shape (any number of axes); 1.0 when both are empty."""
    return metrics.dice(metrics.confusion(a, b))


def export_onnx(checkpoint: Path, out: Path, *, opset: int = OPSET, tile: int = DEFAULT_TILE_SIZE) -> ModelInfo:
    """Write ``checkpoint`` as an ONNX model at ``out`` (atomically) and return its ``ModelInfo``.

    ``tile``: the fixed input size for valid-convolution models (ignored for 'same' models).
    """
    import onnx
    import torch

    from ..network.checkpoint import load_model

    if not Path(checkpoint).is_file():
        raise ModelError(f"checkpoint {checkpoint} does not exist")
    try:
        model, ckpt = load_model(checkpoint)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    info = info_from_checkpoint(ckpt)
    depth = int(info.model_args["depth"])
    if info.model_args.get("padding") == "same":
        multiple = 2**depth
        example = torch.zeros(2, info.model_args.get("in_channels", 1), 4 * multiple, 4 * multiple)
        batch = torch.export.Dim("batch", min=1, max=1024)
        height = torch.export.Dim("height_blocks", min=1, max=MAX_SIDE // multiple)
        width = torch.export.Dim("width_blocks", min=1, max=MAX_SIDE // multiple)
        dynamic = {"x": {0: batch, 2: multiple * height, 3: multiple * width}}
    else:
        example = torch.zeros(2, info.model_args.get("in_channels", 1), tile, tile)
        dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
        info = ModelInfo(info.preprocessing, info.threshold, info.model_args, 1, (tile, tile), info.metadata)
    program = _quiet_export(model, example, dynamic, opset)
    proto = program.model_proto
    del proto.metadata_props[:]
    for key, value in sorted(info_to_metadata(info, __version__).items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "vesselseg"
    proto.producer_version = __version__
    proto.doc_string = (
        "Retinal vessel U-Net: input (N, C, H, W) float32 network input (vesselcli.imaging.preprocess.network_input), "
        "output (N, 1, H, W) float32 vessel logits; probability = sigmoid(logit), vessel where probability >= threshold."
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {exc}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    onnx.save_model(proto, str(tmp))
    os.replace(tmp, out)
    return info


def _quiet_export(model, example, dynamic, opset: int):
    """torch.onnx.export (dynamo) without its chatter about optional packages."""
    import torch

    level = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                output_names=["logits"], dynamic_shapes=dynamic, verbose=False, report=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        raise ExportError(f"torch.onnx.export failed: {exc.__class__.__name__}: {str(exc)[:500]}") from None
    finally:
        logging.getLogger("torch.onnx").setLevel(level)


def random_batches(info: ModelInfo, tile: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Named random network inputs covering batch sizes and, for dynamic models, odd sizes."""
    rng = np.random.default_rng(seed)
    channels = int(info.model_args.get("in_channels", 1))
    if info.fixed_tile:
        shapes = {"random batch 1": (1, channels, *info.fixed_tile), "random batch 3": (3, channels, *info.fixed_tile)}
    else:
        m = info.tile_multiple
        shapes = {
            f"random {tile}x{tile} batch 2": (2, channels, tile, tile),
            f"random {2 * m}x{5 * m} batch 1": (1, channels, 2 * m, 5 * m),
            "random 37x61 batch 3 (padded)": (3, channels, 37, 61),
        }
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def drive_tiles(drive_root: Path, pre: Preprocessing, tile: int, images: int = 4) -> np.ndarray:
    """Real network inputs: ``(N, 1, tile, tile) float32`` tiles of the first DRIVE test images.

    Each image goes through ``preprocess.prepare`` (the inference path) and is zero-padded if
    smaller than a tile; tiles are taken at the centre and at three FOV-edge corners (fewer
    when the image is barely larger than a tile), so they hold thick and thin vessels, the
    optic disc and the FOV border.
    """
    from ..io.imageio import read_image, read_mask
    from ..io.protocols import drive_test_set, fov_masks

    try:
        test = drive_test_set(Path(drive_root).parent)
    except FileNotFoundError as exc:
        raise ExportError(str(exc)) from None
    masks = fov_masks(test)
    tiles = []
    for path in test.images[:images]:
        x, _ = prepare(read_image(path), read_mask(masks[path]), pre)
        x = np.pad(x, ((0, 0), (0, max(0, tile - x.shape[1])), (0, max(0, tile - x.shape[2]))))
        h, w = x.shape[1:]
        corners = {((h - tile) // 2, (w - tile) // 2), (0, 0), (h - tile, 0), ((h - tile) // 2, w - tile)}
        for top, left in sorted(corners):
            tiles.append(x[:, top : top + tile, left : left + tile])
    return np.stack(tiles).astype(np.float32)


def check_parity(
    onnx_path: Path,
    checkpoint: Path,
    batches: dict[str, np.ndarray],
    *,
    atol: float = LOGIT_ATOL,
    min_dice: float = MIN_DICE,
) -> Parity:
    """Compare ONNX Runtime (CPU, FP32) with PyTorch (CPU, FP32) on each named batch.

    Both run through their ``Engine`` classes, so the padding ``OnnxRuntimeEngine`` adds is
    checked too. Masks use the model's threshold on float32 sigmoids. Raises ``ParityError``
    naming every failing case.
    """
    from ..engines.onnxruntime import OnnxRuntimeEngine
    from ..engines.torch import TorchEngine

    ort_engine = OnnxRuntimeEngine(onnx_path, "cpu")
    torch_engine = TorchEngine(checkpoint, "cpu")
    threshold = ort_engine.info.threshold
    parity = Parity(atol=atol, min_dice=min_dice)
    for name, batch in batches.items():
        a = ort_engine.infer(batch)
        b = torch_engine.infer(batch)
        diff = float(np.abs(a - b).max())
        dice = mask_dice(sigmoid(a) >= threshold, sigmoid(b) >= threshold)
        parity.cases.append(Case(name, tuple(batch.shape), diff, dice))
    ort_engine.close()
    torch_engine.close()
    bad = parity.failures()
    if bad:
        lines = "; ".join(f"{c.name}: max |logit diff| {c.max_abs_diff:.2e} (limit {atol:.0e}), Dice {c.dice:.5f} (floor {min_dice})" for c in bad)
        raise ParityError(f"ONNX Runtime and PyTorch disagree on {onnx_path.name}: {lines}")
    return parity


@dataclass(frozen=True)
class ExportConfig:
    """What ``vesselseg export`` was asked to do (built by the CLI)."""

    checkpoint: Path
    out_dir: Path
    name: str
    tile: int = DEFAULT_TILE_SIZE
    opset: int = OPSET
    drive_root: Path | None = None
    tensorrt: bool = True
    fp16: bool = True
    tile_min: int = 64
    tile_max: int = 1024
    batch_max: int = 16
    device: str = "cuda:0"
    update_shipped: Path | None = None
    data_root: Path | None = None  # DRIVE/, CHASE_DB1/, HRF/ for the variants' calibration and gate
    variants: tuple[str, ...] = ("int8",)


@dataclass
class ExportReport:
    onnx: Path
    info: ModelInfo
    parity: Parity
    real_tiles: str
    shipped: Path | None = None
    plan: Path | None = None
    plan_dice: float | None = None
    tensorrt: str = ""
    variants: dict[str, str] = field(default_factory=dict)  # precision -> what happened, one line
    gates: dict[str, dict] = field(default_factory=dict)  # precision -> gate record


def export_checkpoint(config: ExportConfig, say=print) -> ExportReport:
    """ONNX export, parity check (random and real DRIVE tiles), then the TensorRT step.

    Nothing is written under the final names unless its check passed. Raises ``ModelError``
    for an unusable checkpoint and ``ExportError`` when a check fails.
    """
    out = Path(config.out_dir) / f"{config.name}.onnx"
    tmp = out.with_name(f".check-{out.name}")
    say(f"exporting {config.checkpoint} to ONNX (opset {config.opset})")
    info = export_onnx(config.checkpoint, tmp, opset=config.opset, tile=config.tile)
    batches = random_batches(info, config.tile)
    tile = info.fixed_tile[0] if info.fixed_tile else config.tile
    tiles, real = _real_tiles(config.drive_root, info.preprocessing, tile)
    if tiles is not None:
        batches[f"DRIVE test tiles {tile}x{tile}"] = tiles
    try:
        say("checking ONNX Runtime against PyTorch")
        parity = check_parity(tmp, config.checkpoint, batches)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    report = ExportReport(out, info, parity, real)
    if config.update_shipped is not None:
        _copy_atomic(out, config.update_shipped)
        report.shipped = config.update_shipped
    report.tensorrt = _tensorrt_step(config, report, tiles if tiles is not None else batches[next(iter(batches))], say)
    for precision in config.variants:
        report.variants[precision] = _variant_step(config, report, precision, say)
    return report


def _variant_step(config: ExportConfig, report: ExportReport, precision: str, say) -> str:
    """Build the ``precision`` variant of the exported model, gate it, keep it only if it passed.

    With ``update_shipped`` the shipped copy follows: replaced by a variant that passed, removed
    when the gate failed or could not run (a stale variant of other weights must not ship).
    """
    import tempfile

    from ..variants import gate as gates
    from ..variants.quantize import quantize_int8
    from ..variants.record import gate_path, variant_path, write_record

    if precision != "int8":
        raise ExportError(f"unknown variant {precision!r}; vesselseg builds int8")
    out = variant_path(report.onnx, precision)
    shipped = variant_path(report.shipped, precision) if report.shipped else None
    try:
        sets = gates.training_sets(config.data_root) if config.data_root else None
        gates.drive_test(config.data_root) if config.data_root else None
    except FileNotFoundError as exc:
        sets, missing = None, str(exc)
    else:
        missing = "no --data folder given"
    if sets is None:
        _remove_variant(shipped)
        return f"skipped: {missing}; `--precision auto` runs float32"
    say(f"building the {precision} variant (calibration on every 4th training image)")
    tmp = out.with_name(f".check-{out.name}")
    quantize_int8(report.onnx, tmp, gates.calibration_inputs(sets, report.info.preprocessing))
    with tempfile.TemporaryDirectory(prefix="vesselseg-gate-") as work:
        record = gates.run_gate(report.onnx, tmp, precision, Path(config.data_root), Path(work), say=say)
    report.gates[precision] = record
    if not record["passed"]:
        tmp.unlink(missing_ok=True)
        _remove_variant(out)
        _remove_variant(shipped)
        return f"not shipped: the gate failed ({_gate_line(record)})"
    os.replace(tmp, out)
    write_record(out, record)
    if shipped is not None:
        _copy_atomic(out, shipped)
        _copy_atomic(gate_path(out), gate_path(shipped))
    return f"built {out.name}: {_gate_line(record)}"


def _remove_variant(path: Path | None) -> None:
    from ..variants.record import gate_path

    if path is not None:
        path.unlink(missing_ok=True)
        gate_path(path).unlink(missing_ok=True)


def _gate_line(record: dict) -> str:
    parts = [f"{name} min Dice {d['min_dice']:.4f}" for name, d in record["datasets"].items()]
    precision = record["precision"]
    parts.append(f"DRIVE test F1 {record['f1'][precision]:.4f} vs float32 {record['f1']['fp32']:.4f}")
    ms = record["ms_per_batch"]
    parts.append(f"{ms['fp32']:.0f} -> {ms[precision]:.0f} ms per batch of {record.get('batch', 'tiles')}")
    return "; ".join(parts)


def _real_tiles(drive_root: Path | None, pre: Preprocessing, tile: int) -> tuple[np.ndarray | None, str]:
    if drive_root is None or not (Path(drive_root) / "test" / "images").is_dir():
        return None, f"skipped: DRIVE not found at {drive_root} (pass --data DIR holding DRIVE/, or set VESSELSEG_DATA)"
    tiles = drive_tiles(Path(drive_root), pre, tile)
    return tiles, f"{len(tiles)} tiles of {tile}x{tile} from DRIVE test images"


def _copy_atomic(source: Path, target: Path) -> None:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}")
    tmp.write_bytes(Path(source).read_bytes())
    os.replace(tmp, target)


def _tensorrt_step(config: ExportConfig, report: ExportReport, tiles: np.ndarray, say) -> str:
    """Build and validate a TensorRT plan, or say plainly why the step was skipped."""
    if not config.tensorrt:
        return "skipped: --onnx-only was given"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "skipped: the tensorrt package is not installed (on an NVIDIA GPU machine: pip install 'vesselseg[tensorrt]')"
    from ..engines.select import nvidia_gpu_present

    if not nvidia_gpu_present():
        return "skipped: no NVIDIA GPU driver found on this machine"
    profile = Profile(config.tile, config.tile_min, config.tile_max, min(8, config.batch_max), config.batch_max)
    for fp16 in ((True, False) if config.fp16 else (False,)):
        plan = build_plan(report.onnx, config.out_dir, profile, fp16=fp16, device=config.device, say=say)
        dice = validate_plan(plan, report.onnx, tiles)
        if dice >= PLAN_MIN_DICE:
            report.plan, report.plan_dice = plan, dice
            return f"built {plan.name}; masks vs ONNX Runtime FP32: Dice {dice:.4f}"
        say(f"rejected {plan.name}: masks vs ONNX Runtime FP32 Dice {dice:.4f} < {PLAN_MIN_DICE}")
        plan.unlink(missing_ok=True)
        plan.with_suffix(".json").unlink(missing_ok=True)
    raise ExportError("no TensorRT engine matched ONNX Runtime FP32 (Dice < 0.99 in FP16 and FP32); the ONNX model is kept")
