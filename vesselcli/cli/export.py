"""``vesselseg export [CHECKPOINT]``: ONNX model (+ TensorRT engine where possible), each proved
against the checkpoint before it is kept.

Exit code 0 when the ONNX model (and the TensorRT engine, unless its step was skipped) passed
its checks, 1 when a check failed (nothing is left under the final names), 2 for usage errors
(missing or unreadable checkpoint, bad option). A skipped TensorRT step is not a failure: the
reason is printed.
"""
from __future__ import annotations

import os
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..run.config import DEFAULT_TILE_SIZE


def _default_data() -> Path:
    return Path(os.environ.get("VESSELSEG_DATA", "../shared/data"))


def _tile(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value % 16:
        raise click.BadParameter(f"{value} is not a multiple of 16; try {max(16, value - value % 16)} or {value + 16 - value % 16}")
    return value


@click.command()
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("engines"), show_default=True,
              help="Folder for <name>.onnx, TensorRT plans and their timing cache.")
@click.option("--name", help="File name stem of the outputs. Default: the checkpoint's (default.pt -> default.onnx).")
@click.option("--update-shipped", is_flag=True,
              help="Also replace the package's own model (vesselcli/models/default.onnx) with the checked export.")
@click.option("--onnx-only", "--no-tensorrt", "onnx_only", is_flag=True, help="Skip the TensorRT step.")
@click.option("--fp32", is_flag=True, help="Build the TensorRT engine in FP32 (default: FP16 where the GPU supports it).")
@click.option("--tile", type=click.IntRange(16, 4096), default=DEFAULT_TILE_SIZE, show_default=True, callback=_tile,
              help="Tile side the engine is optimised for (segment's default); the fixed input size of valid-convolution models.")
@click.option("--tile-min", type=click.IntRange(16, 4096), default=64, show_default=True, callback=_tile, help="Smallest tile side a TensorRT engine accepts.")
@click.option("--tile-max", type=click.IntRange(16, 4096), default=1024, show_default=True, callback=_tile, help="Largest tile side a TensorRT engine accepts.")
@click.option("--batch-max", type=click.IntRange(1, 1024), default=16, show_default=True, help="Largest batch a TensorRT engine takes in one call.")
@click.option("--opset", type=click.IntRange(17, 21), default=18, show_default=True, help="ONNX opset.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path), default=_default_data,
              show_default="$VESSELSEG_DATA or ../shared/data", help="Folder holding DRIVE/, for the parity check on real tiles.")
@click.option("--device", default="cuda:0", show_default=True, help="GPU to build the TensorRT engine on.")
@click.option("--no-int8", is_flag=True, help="Do not build the INT8 variant (nor run its parity gate).")
def export(checkpoint: Path | None, out_dir: Path, name: str | None, update_shipped: bool, onnx_only: bool, fp32: bool,
           tile: int, tile_min: int, tile_max: int, batch_max: int, opset: int, data_root: Path, device: str,
           no_int8: bool) -> None:
    """Export CHECKPOINT (default: the shipped model) to ONNX, check it, and build a TensorRT engine.

    The ONNX model has a dynamic batch and dynamic height and width ('same' models) and
    carries the model's preprocessing, threshold, arguments, training data and metrics, so
    `vesselseg segment --model` needs nothing else. ONNX Runtime must match PyTorch on random
    and real DRIVE tiles (max |logit difference| and mask Dice within fixed limits) or nothing
    is written. Where TensorRT and an NVIDIA GPU are present, an FP16 engine is built
    (engines/<name>-<gpu>-sm<cc>-trt<version>-fp16.plan) and kept only if its masks match
    ONNX Runtime FP32 (Dice >= 0.99); elsewhere this step is skipped, with the reason printed.

    Then the INT8 variant (<name>.int8.onnx, ONNX Runtime static quantization calibrated on
    training images) and its parity gate through segment's pipeline (mask Dice >= 0.99 against
    float32 on every DRIVE, CHASE_DB1 and HRF training image, DRIVE test F1 within 0.003); it
    is kept, with its gate record <name>.int8.json, only if it passed. Needs --data.
    """
    from ..engines.errors import ModelError
    from ..engines.select import shipped_model
    from ..export.onnx_export import ExportConfig, ExportError, export_checkpoint

    console = Console(highlight=False, soft_wrap=True)
    if tile_min > tile or tile > tile_max:
        raise click.BadParameter(f"need --tile-min <= --tile <= --tile-max, got {tile_min}, {tile}, {tile_max}", param_hint="--tile")
    checkpoint = checkpoint or shipped_model(".pt")
    if not checkpoint.is_file():
        Console(stderr=True, soft_wrap=True, highlight=False).print(
            f"[red]error:[/red] checkpoint {escape(str(checkpoint))} does not exist; pass a .pt file made by training (python -m train)"
        )
        raise SystemExit(2)
    config = ExportConfig(
        checkpoint=checkpoint, out_dir=out_dir, name=name or checkpoint.stem, tile=tile, opset=opset,
        drive_root=data_root / "DRIVE", tensorrt=not onnx_only, fp16=not fp32, tile_min=tile_min,
        tile_max=tile_max, batch_max=batch_max, device=device,
        update_shipped=shipped_model(".onnx") if update_shipped else None,
        data_root=data_root, variants=() if no_int8 else ("int8",),
    )
    try:
        report = export_checkpoint(config, say=lambda line: console.print(f"[dim]{escape(line)}[/dim]"))
    except ModelError as exc:
        Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None
    except ExportError as exc:
        Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]export failed:[/red] {escape(str(exc))}")
        raise SystemExit(1) from None
    table = Table(title="ONNX Runtime vs PyTorch (CPU, FP32)", box=box.SIMPLE)
    for column in ("case", "shape", "max |logit diff|", "mask Dice"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case in report.parity.cases:
        table.add_row(escape(case.name), "x".join(map(str, case.shape)), f"{case.max_abs_diff:.2e}", f"{case.dice:.5f}")
    console.print(table)
    console.print(f"limits: max |logit diff| <= {report.parity.atol:g}, Dice >= {report.parity.min_dice}; real tiles: {escape(report.real_tiles)}")
    console.print(f"[green]wrote[/green] {escape(str(report.onnx))}")
    if report.shipped:
        console.print(f"[green]updated[/green] the shipped model {escape(str(report.shipped))}")
    console.print(f"TensorRT: {escape(report.tensorrt)}")
    for precision, line in report.variants.items():
        console.print(f"{precision}: {escape(line)}")
