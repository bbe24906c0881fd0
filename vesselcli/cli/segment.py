"""``vesselseg segment INPUT... --out OUT``: masks, overlays and results.csv for folders of images.

A thin click layer: options are checked by click types and callbacks, gathered into a frozen
``SegmentConfig``, and handed to ``vesselcli.run.pipeline`` with the engine ``--model`` /
``--engine`` / ``--device`` choose. Exit code: 0 every image done, 1 some failed (one line
each on stderr), an input folder could not be listed or the run stopped on a full disk, 2
usage errors (no images, unreadable model, bad option, OUT busy with another run, OUT made
with other settings: see ``vesselcli.run.runrecord``), 128+N
when stopped by signal N (SIGINT 130, SIGTERM 143): rerunning the same command then
finishes the rest.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click

from ..run import pipeline
from ..run.config import (DEFAULT_BATCH_SIZE, DEFAULT_TILE_OVERLAP, DEFAULT_WORKERS, PARALLEL_BATCH_SIZE, SCALE_RULES,
                          SEGMENT_TILE_SIZE, SegmentConfig)
from ..io.discover import LinkedOutputError
from ..engines.errors import ModelError
from ..engines.select import ENGINES
from ..io.imageio import DEFAULT_MAX_PIXELS
from ..io.lock import LockedError
from ..run.report import CsvMismatchError, ImageResult, Report
from ..run.parts import PartPaths
from ..run.shards import Shard, ShardError, parse_shard
from ..run.runrecord import SettingsMismatchError
from ..variants.record import PRECISIONS
from .console import Lines, error_console, progress_bar
from .params import name_pattern

if TYPE_CHECKING:  # Ray Data's module is imported only by --ray runs
    from ..run.ray_data import RayOptions


class Refused(click.ClickException):
    """A run that cannot start for a reason the user must fix (exit code 2, no usage text)."""

    exit_code = 2


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise click.BadParameter(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N (N = GPU index)")


def _check_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return parse_shard(value, os.environ)
    except ShardError as exc:
        raise click.BadParameter(str(exc)) from None


@contextmanager
def stop_on_signals(stop: threading.Event, announce) -> Iterator[list[int]]:  # noqa: ANN001
    """On the first SIGINT/SIGTERM set ``stop`` (the run winds down); on the second exit at once.

    Yields the list of signals received. Exiting at once is ``os._exit``: the engine may be
    inside native code that must not see the interpreter shut down around it, and nothing is
    lost by skipping the clean-up: every CSV row is flushed whole as it is written, every
    output file is renamed into place complete, the lock dies with the process and the next
    run deletes any temporary file left. Outside the main thread (where Python cannot install
    handlers) nothing is installed.
    """
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:
            sys.stderr.write("stopped at once; rerun the same command to finish the rest\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        received.append(signum)
        stop.set()
        announce(signum)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...",
                type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: masks/, overlays/, probabilities/ and results.csv go here.")
@click.option("--gt", "gt_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
              help="Annotations, paired with images by name; adds iou, dice, ... columns.")
@click.option("--fov", "fov_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
              help="FOV masks, paired by name. Default: detected from each image.")
@click.option("--gt-pattern", callback=name_pattern, metavar="PATTERN",
              help="Name of each image's annotation without extension, e.g. '{stem}_manual1'. Default: the pairing rule.")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="PATH",
              help="ONNX model, TensorRT engine or training checkpoint. Default: the shipped model.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True, help="Inference backend.")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="fp32, int8 (the gated INT8 variant, ONNX Runtime on the CPU), or auto: the fastest that passed its gate.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), metavar="T",
              help="Vessel where probability >= T. Default: the model's own.")
@click.option("--workers", type=click.IntRange(1, 64), default=DEFAULT_WORKERS, show_default=True,
              help="Reader threads and writer threads (each).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None, show_default="auto",
              help=f"Tiles per engine call (taken across images); auto: {PARALLEL_BATCH_SIZE} when the engine runs "
                   f"{pipeline.CPU_PARALLEL_CALLS} calls at once (ONNX Runtime on the CPU), else {DEFAULT_BATCH_SIZE}.")
@click.option("--tile-size", type=click.IntRange(16, 8192), default=SEGMENT_TILE_SIZE, show_default=True,
              help="Largest tile side in pixels at the model's scale (rounded up to the model's multiple); "
                   "tiles are shaped to the image.")
@click.option("--tile-overlap", type=click.IntRange(0, 8191), default=DEFAULT_TILE_OVERLAP, show_default=True,
              help="Least overlap of neighbouring tiles in pixels; must be below --tile-size.")
@click.option("--scale-rule", type=click.Choice(SCALE_RULES), default="calibre", show_default=True,
              help="calibre: scale each image so its field of view is the model's, but never shrink it more "
                   "than 2x, and rescale it where the vessels a first look finds are wider than the model's "
                   "(photographs without a dark border); fov: by the field of view alone (the earlier default).")
@click.option("--tta", is_flag=True, help="Average the four flips of each tile (4x slower, slightly smoother).")
@click.option("--save-probabilities", is_flag=True, help="Also write 8-bit vessel probability maps.")
@click.option("--no-overlays", is_flag=True, help="Do not write overlays.")
@click.option("--overwrite", is_flag=True,
              help="Redo every image with these settings (default: skip those already done; other settings are refused).")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images larger than this many pixels before decoding them.")
@click.option("--pixel-size", "pixel_size_um", type=click.FloatRange(0.0, 1e6, min_open=True), metavar="UM",
              help="Micrometres per pixel: adds vessel_length_mm and mean_width_um to results.csv.")
@click.option("--dicom-seg", is_flag=True,
              help="Also write a DICOM Segmentation per DICOM input to OUT/dicom-seg/ (needs vesselseg[dicom]).")
@click.option("--keep-identifiers", is_flag=True,
              help="Write DICOM inputs' patient name, ID, birth date and accession number to OUT/identifiers.csv "
                   "(a shard: to OUT/parts, merged by `vesselseg merge`; default: written nowhere in OUT).")
@click.option("--shard", callback=_check_shard, metavar="I/N|auto",
              help="Do only shard I of N (0-based; by a hash of each image's name) into OUT/parts; 'auto' reads "
                   "Slurm array or torchrun variables. Then `vesselseg merge OUT`.")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run on Ray Data (pip install 'vesselseg[ray]'): 'local' starts Ray here, 'auto' joins the "
                   "running cluster, or a cluster address.")
@click.option("--ray-actors", type=click.IntRange(1, 100000), metavar="N",
              help="With --ray: engine actors (default: one per GPU, else one per CPU, each loading and writing its own images).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; errors still go to stderr.")
def segment(inputs: tuple[Path, ...], out: Path, gt_dir: Path | None, fov_dir: Path | None, gt_pattern: str | None,
            model: Path | None, engine: str, device: str, precision: str, threshold: float | None, workers: int, batch_size: int | None,
            tile_size: int, tile_overlap: int, tta: bool, save_probabilities: bool, no_overlays: bool,
            overwrite: bool, max_pixels: int, pixel_size_um: float | None, dicom_seg: bool,
            keep_identifiers: bool, scale_rule: str, shard: Shard | None, ray_address: str | None,
            ray_actors: int | None, quiet: bool) -> None:
    """Segment the vessels of every image in INPUT... (files and folders, searched recursively).

    Writes OUT/masks/<name>.png (0/255, the image's own size), OUT/overlays/<name>.jpg and
    OUT/results.csv (one row per image, written as it goes). Rerunning the same command skips
    images already done, so an interrupted run resumes; --overwrite redoes them.

    Exit code: 0 all images done, 1 some failed, 2 usage error, 130/143 interrupted.
    """
    if tile_overlap >= tile_size:
        raise click.BadParameter(f"{tile_overlap} is not below --tile-size {tile_size}; use a smaller overlap",
                                 param_hint="--tile-overlap")
    if shard is not None and ray_address is not None:
        raise click.UsageError("--shard and --ray do not go together: Ray spreads the images over the cluster itself; "
                               "use one or the other")
    if ray_actors is not None and ray_address is None:
        raise click.BadParameter("only applies with --ray", param_hint="--ray-actors")
    config = SegmentConfig(
        inputs=inputs, out=out, gt_dir=gt_dir, fov_dir=fov_dir, gt_pattern=gt_pattern, threshold=threshold,
        workers=workers, batch_size=batch_size, tile_size=tile_size, tile_overlap=tile_overlap, tta=tta,
        save_probabilities=save_probabilities, overlays=not no_overlays, overwrite=overwrite, max_pixels=max_pixels,
        scale_rule=scale_rule,
        pixel_size_um=pixel_size_um,
        dicom_seg=dicom_seg, keep_identifiers=keep_identifiers, shard=shard,
    )
    if dicom_seg:
        from ..io.dicom_seg import MissingExtraError, require_highdicom

        try:
            require_highdicom()
        except MissingExtraError as exc:
            raise click.UsageError(str(exc)) from None
    err = error_console(quiet)
    options = _plain(click.get_current_context().params)
    ray = None
    if ray_address is not None:
        from ..run.ray_data import RayOptions

        ray = RayOptions(ray_address, ray_actors, model, engine, device, precision)
    try:
        code = _segment(config, model, engine, device, precision, err, quiet, options, ray)
    except KeyboardInterrupt:  # Ctrl-C while finding images or loading the model: nothing written yet
        err.print("interrupted before any image was segmented", markup=False)
        code = 128 + signal.SIGINT
    click.get_current_context().exit(code)


def _plain(value: object) -> object:
    """CLI option values as JSON types: paths and shards as strings, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (Path, Shard)):
        return str(value)
    return value


def _segment(config: SegmentConfig, model: Path | None, engine: str, device: str, precision: str, err: Lines,
             quiet: bool, options: dict, ray: RayOptions | None = None) -> int:
    """Plan, open the engine, run; returns the exit code (usage errors raise click exceptions).

    With ``ray`` the engine opened here (on the CPU) only describes the model (and its
    settings); Ray's actors open their own.
    """
    try:
        the_plan = pipeline.plan(config)
    except pipeline.NoImagesError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        from ..engines import choose_engine

        # with --ray the driver only reads the model's description: the actors choose their own engine
        selection = (choose_engine(model, engine, device, precision=precision,
                                   parallel_calls=pipeline.CPU_PARALLEL_CALLS) if ray is None
                     else choose_engine(model, "auto", "cpu", precision=precision))
    except ModelError as exc:
        raise click.UsageError(f"cannot use the model: {exc}") from None
    the_engine = selection.engine
    for line in selection.fallbacks():  # a GPU that failed to start: say so, even with --quiet
        err.print(f"warning: {line}", markup=False)
    try:
        try:
            config.tile_spec(the_engine.info.tile_multiple, the_engine.info.fixed_tile)
        except ValueError as exc:
            raise click.UsageError(f"cannot tile for this model: {exc}") from None
        report, seconds = _run(config, the_plan, the_engine, err, quiet, options, ray)
    finally:
        the_engine.close()
    if config.shard is None:  # a shard's images are a part of the run: merge writes the report
        write_report(config.out, err, quiet)
    if not quiet:
        _print_summary(report, config, seconds)
    _print_ending(report, err)
    if the_plan.unlisted and report.exit_code == 0:
        err.print(f"{len(the_plan.unlisted)} folder(s) could not be listed (see the warnings above)", markup=False)
        return 1  # images may be missing: not a complete success
    return report.exit_code


def _run(config: SegmentConfig, the_plan: pipeline.Plan, engine, err: Lines, quiet: bool,  # noqa: ANN001
         options: dict, ray: RayOptions | None) -> tuple[Report, float]:
    """Run the pipeline under a progress bar and the signal handlers; (report, seconds it ran)."""
    for line in the_plan.unlisted:
        err.print(f"warning: {line}; the images in it are not included", markup=False)
    for line in the_plan.skipped:
        err.print(f"warning: {line}", markup=False)
    if config.dicom_seg and not any(i.frame is not None for i in the_plan.items):
        err.print("warning: --dicom-seg: no input is DICOM, so no DICOM Segmentation is written "
                  "(a segmentation must reference a DICOM source)", markup=False)
    if the_plan.unannotated:
        names = ", ".join(i.name for i in the_plan.unannotated[:5])
        more = f" and {len(the_plan.unannotated) - 5} more" if len(the_plan.unannotated) > 5 else ""
        err.print(f"warning: no annotation in {config.gt_dir} for {len(the_plan.unannotated)} image(s) "
                  f"({names}{more}); their figure columns stay empty", markup=False)
    if not quiet:
        threshold = config.threshold if config.threshold is not None else engine.info.threshold
        where = (f"Ray ({ray.address})" if ray is not None
                 else f"{engine.name} on {engine.device} ({getattr(engine, 'precision', 'fp32')})")
        which = f", shard {config.shard}" if config.shard is not None else ""
        err.print(f"{len(the_plan.items)} images{which}, {where}, threshold {threshold:.3f}", markup=False)
    stop = threading.Event()
    progress = progress_bar(err, quiet)
    task = progress.add_task("segment", total=None)
    started = time.perf_counter()

    def on_start(report: Report) -> None:
        nonlocal started
        started = time.perf_counter()
        progress.update(task, total=report.total - report.skipped)
        if report.skipped and not quiet:
            progress.console.print(f"skipping {report.skipped} image(s) already done in {config.out} "
                                   "(--overwrite redoes them)", markup=False)

    def on_result(result: ImageResult) -> None:
        if result.status != "ok":
            progress.console.print(f"error: {result.image}: {result.error}", markup=False)
        progress.advance(task)

    def announce(signum: int) -> None:
        progress.console.print(f"{signal.Signals(signum).name}: finishing the images in flight, then stopping "
                               "(again to stop at once)", markup=False)

    with progress, stop_on_signals(stop, announce) as received:
        try:
            if ray is None:
                report = pipeline.run(config, the_plan, engine, stop, on_start=on_start, on_result=on_result,
                                      options=options)
            else:
                report = _run_on_ray(config, the_plan, engine, ray, stop, on_start, on_result, options)
        except LockedError as exc:
            raise Refused(str(exc)) from None
        except (CsvMismatchError, SettingsMismatchError, LinkedOutputError) as exc:
            raise Refused(str(exc)) from None
        except OSError as exc:
            raise Refused(f"cannot write into {config.out}: {exc.strerror or exc}; choose a writable --out") from None
    if received:
        report.interrupted_by = received[0]
    return report, time.perf_counter() - started


def _run_on_ray(config: SegmentConfig, the_plan: pipeline.Plan, engine, ray: RayOptions,  # noqa: ANN001
                stop: threading.Event, on_start, on_result, options: dict) -> Report:  # noqa: ANN001
    """``ray_data.run``, its own refusals (Ray missing, no cluster) as ``Refused``."""
    from ..run import ray_data

    try:
        return ray_data.run(config, the_plan, engine, ray, stop, on_start=on_start, on_result=on_result,
                            options=options)
    except ray_data.RayError as exc:
        raise Refused(str(exc)) from None


def write_report(out: Path, err: Lines, quiet: bool) -> None:
    """OUT/report.html for the run so far; a page that cannot be built is a warning, not a failure."""
    from ..analysis.html_report import ReportError, build_report

    try:
        build_report(out)
    except (ReportError, OSError, ValueError) as exc:
        err.print(f"warning: the report could not be written: {exc}; `vesselseg report {out}` retries",
                  markup=False)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_summary(report: Report, config: SegmentConfig, seconds: float) -> None:
    if config.shard is None:
        where = [("results", str(config.out / "results.csv"))]
    else:
        where = [("results", str(PartPaths(config.out, config.shard).csv)),
                 ("then", f"vesselseg merge {config.out} (once every shard is done)")]
    print_summary(report, config.gt_dir is not None, seconds, where)


def print_summary(report: Report, with_truth: bool, seconds: float, where: list[tuple[str, str]],
                  title: str = "vesselseg segment") -> None:
    """The summary table on stdout: counts, means, speed (when ``seconds``), then ``where`` rows."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, title=title)
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_row("done", str(report.done))
    table.add_row("failed", str(report.failed))
    table.add_row("skipped", f"{report.skipped} (already done)")
    if report.remaining:
        table.add_row("not done", f"{report.remaining} (rerun the same command)")
    table.add_row("mean vessel density", _fmt(report.mean_density))
    if with_truth:
        table.add_row("mean IoU", _fmt(report.mean_iou))
        table.add_row("mean Dice", _fmt(report.mean_dice))
        if report.mean_width_ratio is not None:
            table.add_row("mean width vs annotation", f"{report.mean_width_ratio:.2f}x")
    processed = report.done + report.failed
    if processed and seconds > 0:
        table.add_row("speed", f"{processed / seconds:.2f} images/s ({seconds:.1f} s)")
    for label, text in where:
        table.add_row(label, text)
    Console().print(table)


def _print_ending(report: Report, err: Lines) -> None:
    if report.fatal:
        err.print(f"error: {report.fatal}", markup=False)
    if report.interrupted_by is not None:
        name = signal.Signals(report.interrupted_by).name
        err.print(f"stopped by {name}: {report.remaining} image(s) not done; rerun the same command to finish them",
                  markup=False)
    elif report.failed:
        err.print(f"{report.failed} image(s) failed (see the error lines above and the error column of results.csv)",
                  markup=False)
