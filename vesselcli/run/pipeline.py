"""The streaming ``segment`` pipeline: readers -> tiler + engine -> writers, with bounded queues.

::

    items --> reader threads (decode, FOV, prepare, FOV box) --[queue of `workers`]-->
          --> inference threads (tiles of several images per engine batch, blending)
                                                            --[queue of `workers`]-->
          --> writer threads (resize back, threshold, metrics, encode, atomic writes, CSV row)

There is one inference thread per call the engine is set up to run at once
(``parallel_calls``, see ``inference_threads``): ONNX Runtime on the CPU opened by ``segment``
runs two calls of half the cores each, which kept a 2-core machine busier than one call on
both cores (the INT8 model of commit 704b25f, quiet: 50 against 61 ms per DRIVE image): a
call on both cores waits at each parallel section for its slower thread, so any reader or
writer thread stalls it; two single-threaded calls just share the cores.

The queues are bounded, so memory holds a fixed number of images however many there are.
One broken image is one ``error`` row and one call of ``on_result``; the run goes on.
Setting ``stop`` (the CLI does on SIGINT/SIGTERM) stops taking new images: images already in
the engine finish and are written, images read but not yet tiled are dropped unwritten, and
the CSV stays whole. A full or read-only disk stops the run the same way (``Report.fatal``).

DICOM inputs: objects that are not photographs are left out at planning (one warning line
each, ``Plan.skipped``); a multi-frame object is one image per frame. With
``keep_identifiers`` their patient identifiers go to ``identifiers.csv`` (one row per image
done, in input order when the run ends; a shard's go to its part, see ``vesselcli.run.parts``),
and nowhere else; without it they are written nowhere.

Resuming, locking, the results file (``results.csv``, or a shard's part) and the run's
record (``OUT/run.json``: only a run with the recorded settings resumes, see
``vesselcli.run.runrecord``) are the ledger's (``vesselcli.run.ledger``), shared with the shard
and Ray paths; so are the per-image steps at the end of this module (``load_one``,
``finish_one``).
"""
from __future__ import annotations

import errno
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .config import SegmentConfig
from ..io.discover import Item, OutputPaths, assign_names, discover, expand_dicom, walk_images
from ..engines.base import Engine, sigmoid
from ..io.imageio import IMAGE_EXTENSIONS
from ..io.dicom import DICOM_EXTENSIONS, IDENTIFIER_KEYWORDS
from ..io.pairing import pair_files
from ..imaging.preprocess import Preprocessing
from .report import IDENTIFIER_COLUMNS, ImageResult, Report, ResultsWriter
from .ledger import open_ledger
from .shards import shard_of
from .runrecord import output_settings
from .stages import Job, Partners, StageError, error_result, finish, load, rescale, write
from ..imaging.tiling import TileSpec, flip_averaged, sliding_window, stream_tiled

#: errno values that no other image could escape either: the run stops (files written stay).
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})
_DONE = object()  # end-of-stream marker put by each producer thread


class NoImagesError(ValueError):
    """The inputs hold no image; the message says where it looked."""


@dataclass(frozen=True)
class Plan:
    """What a run will do: the images in order and their paired annotation / FOV files."""

    items: list[Item]
    partners: dict[Path, Partners]
    unannotated: list[Item]  # images without an annotation although --gt was given
    unlisted: tuple[str, ...] = ()  # input folders that could not be listed (their images are missing)
    skipped: tuple[str, ...] = ()  # DICOM objects that are not photographs: "<name>: <why>; skipped"
    positions: tuple[int, ...] = ()  # with a shard: each item's place in the whole listing


def plan(config: SegmentConfig) -> Plan:
    """Find the images and pair them; ``NoImagesError`` when there are none."""
    out = Path(os.path.abspath(config.out))
    unlisted: list[str] = []
    sources, skipped = expand_dicom(discover(list(config.inputs), exclude=Path(os.path.realpath(out)), unlisted=unlisted))
    items = assign_names(sources)
    if not items and skipped:
        raise NoImagesError(f"no images found: the only DICOM objects are not photographs ({'; '.join(skipped[:3])})")
    if not items:
        where = ", ".join(str(p) for p in config.inputs)
        inside = [p for p in config.inputs if Path(os.path.realpath(p)).is_relative_to(os.path.realpath(out))]
        if inside:
            raise NoImagesError(
                f"no images found: {inside[0]} is inside the output folder {config.out}, which is never "
                "searched for images; choose an --out outside the input folders"
            )
        if unlisted:
            raise NoImagesError(f"no images found: {'; '.join(unlisted)}; check the folder's permissions")
        raise NoImagesError(
            f"no images found in {where} (looked for {', '.join(sorted(IMAGE_EXTENSIONS | DICOM_EXTENSIONS))} "
            "files, any case, and DICOM files without an extension, in sub-folders too, hidden names "
            "skipped); check the path"
        )
    paths = [item.path for item in items]
    truths, truth_errors = _pair(paths, config.gt_dir, config.gt_pattern)
    fovs, fov_errors = _pair(paths, config.fov_dir, None)
    partners = {
        p: Partners(truths.get(p), fovs.get(p), truth_errors.get(p) or fov_errors.get(p, ""))
        for p in paths
    }
    unannotated = [i for i in items if config.gt_dir and i.path not in truths and i.path not in truth_errors]
    if config.shard is None:
        return Plan(items, partners, unannotated, tuple(unlisted), tuple(skipped))
    # Names are given over the whole listing first, so every shard names an image alike.
    mine = [p for p, i in enumerate(items) if shard_of(i.name, config.shard.count) == config.shard.index]
    chosen = [items[p] for p in mine]
    kept = set(chosen)
    return Plan(chosen, {i.path: partners[i.path] for i in chosen}, [i for i in unannotated if i in kept],
                tuple(unlisted), tuple(skipped), tuple(mine))


def _pair(images: list[Path], folder: Path | None, pattern: str | None) -> tuple[dict[Path, Path], dict[Path, str]]:
    if folder is None:
        return {}, {}
    pairs, _, errors = pair_files(images, walk_images(Path(folder)), pattern)
    return pairs, errors


def identifier_cells(job: Job, result: ImageResult, config: SegmentConfig) -> dict[str, str] | None:
    """The ``identifiers.csv`` row of an image (``IDENTIFIER_COLUMNS`` -> text), on every run path.

    None unless ``--keep-identifiers``, the image is DICOM and its ``result`` is ``ok``; a Ray
    actor returns it beside the image's row, for the driver to write.
    """
    if not config.keep_identifiers or job.identifiers is None or result.status != "ok":
        return None
    ids = job.identifiers
    names = dict(zip(IDENTIFIER_KEYWORDS, IDENTIFIER_COLUMNS[1:5]))
    cells = {column: ids.get(keyword, "") for keyword, column in names.items()}
    cells.update(image=job.item.name, study_instance_uid=ids.get("StudyInstanceUID", ""),
                 series_instance_uid=ids.get("SeriesInstanceUID", ""), sop_instance_uid=ids.get("SOPInstanceUID", ""),
                 frame="" if job.item.frame is None else str(job.item.frame + 1))
    return cells


def predictor(engine: Engine, tta: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The tiler's predictor: network input tiles -> vessel probabilities (flip-averaged with ``tta``)."""

    def predict(batch: np.ndarray) -> np.ndarray:
        return sigmoid(engine.infer(batch))

    return flip_averaged(predict) if tta else predict


#: Engine calls ``segment`` runs at once on a CPU engine (each on its share of the cores).
CPU_PARALLEL_CALLS = 2


def inference_threads(engine: Engine) -> int:
    """How many threads call ``engine.infer`` at once: its ``parallel_calls`` (1 when it has none)."""
    return max(1, int(getattr(engine, "parallel_calls", 1)))


def run(
    config: SegmentConfig,
    the_plan: Plan,
    engine: Engine,
    stop: threading.Event | None = None,
    on_start: Callable[[Report], None] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
    options: dict[str, object] | None = None,
) -> Report:
    """Segment the planned images into ``config.out``; returns the run's ``Report``.

    Raises ``LinkedOutputError`` when a symbolic link sits where an output of OUT goes,
    ``LockedError`` when another run holds the output folder, ``SettingsMismatchError``
    when OUT (or this shard's part) holds outputs made with other settings (and not
    ``overwrite``), ``CsvMismatchError`` when an existing results.csv has other columns,
    ``OSError`` when the output folder cannot be created. ``on_start`` sees the report once
    the images to skip are known; ``on_result`` is called (from worker threads, one call at a
    time) for every image done. ``options``: every CLI option, recorded in run.json as given.
    """
    stop = stop or threading.Event()
    settings = run_settings(config, engine)
    with open_ledger(config, the_plan.items, the_plan.positions, settings, engine.name, engine.device,
                     options) as ledger:
        if on_start is not None:
            on_start(ledger.report)
        _Run(config, the_plan, engine, stop, ledger.paths, ledger.writer, ledger.report, on_result,
             ledger.identifiers).go(ledger.todo)
    return ledger.report


def run_settings(config: SegmentConfig, engine: Engine) -> dict[str, object]:
    """The ``settings`` of run.json for this configuration on this engine (see ``runrecord``)."""
    threshold = config.threshold if config.threshold is not None else float(engine.info.threshold)
    spec = config.tile_spec(engine.info.tile_multiple, engine.info.fixed_tile)
    return output_settings(
        model=getattr(engine, "path", None),
        threshold=threshold,
        fov_diameter=engine.info.preprocessing.fov_diameter,
        precision=getattr(engine, "precision", "fp32"),
        tile_size=spec.size,
        tile_overlap=spec.overlap,
        tta=config.tta,
        gt_dir=config.gt_dir,
        gt_pattern=config.gt_pattern,
        fov_dir=config.fov_dir,
        overlays=config.overlays,
        probabilities=config.save_probabilities,
        scale_rule=config.scale_rule,
        pixel_size_um=config.pixel_size_um,
        dicom_seg=config.dicom_seg,
        identifiers=config.keep_identifiers,
    )


class _Run:
    """The threads of one run and what they share."""

    def __init__(self, config, the_plan, engine, stop, paths, writer, report, on_result, identifiers=None) -> None:
        self.config: SegmentConfig = config
        self.plan: Plan = the_plan
        self.engine: Engine = engine
        self.stop: threading.Event = stop
        self.paths: OutputPaths = paths
        self.writer: ResultsWriter = writer
        self.report: Report = report
        self.on_result = on_result
        self.identifiers: ResultsWriter | None = identifiers  # identifiers.csv, with --keep-identifiers
        self.threshold = config.threshold if config.threshold is not None else float(engine.info.threshold)
        self.spec = config.tile_spec(engine.info.tile_multiple, engine.info.fixed_tile, inference_threads(engine))
        # Crop to the FOV's box on the model's pooling grid; a fixed-tile engine pads anyway.
        self._align = max(1, engine.info.tile_multiple)
        self._predict = predictor(engine, config.tta)
        self.prepared: queue.Queue = queue.Queue(maxsize=config.workers)
        self.predicted: queue.Queue = queue.Queue(maxsize=config.workers)
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self._record_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.inferers = inference_threads(engine)
        self._readers_left = config.workers  # the last reader to end tells every inference thread
        self._inferers_left = self.inferers  # the last inference thread to end tells every writer

    def go(self, todo: list[Item]) -> None:
        for item in todo:
            self.items.put(item)
        workers = self.config.workers
        threads = [threading.Thread(target=self._reader, name=f"reader-{i}", daemon=True) for i in range(workers)]
        threads += [threading.Thread(target=self._batcher, name=f"inference-{i}", daemon=True)
                    for i in range(self.inferers)]
        threads += [threading.Thread(target=self._writer, name=f"writer-{i}", daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            # Short joins keep the main thread free to run signal handlers promptly.
            while t.is_alive():
                t.join(timeout=0.2)

    # -- shared --------------------------------------------------------------------------
    def _record(self, result: ImageResult) -> None:
        with self._record_lock:
            if self.report.fatal:
                return
            try:
                self.writer.append(result)
            except OSError as exc:
                self._fail_run(f"cannot write {self.paths.csv}: {exc.strerror or exc}")
                return
            self.report.add(result)
            if self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception:  # noqa: BLE001 - a display problem must not lose results
                    pass

    def _fail_run(self, message: str) -> None:
        if not self.report.fatal:
            self.report.fatal = message
        self.stop.set()

    # -- stage 1: readers ----------------------------------------------------------------
    def _reader(self) -> None:
        pre = self.engine.info.preprocessing
        try:
            while not self.stop.is_set():
                try:
                    item = self.items.get_nowait()
                except queue.Empty:
                    break
                job = load_one(item, self.plan.partners[item.path], pre, self.config, self._align)
                if isinstance(job, ImageResult):
                    self._record(job)
                    continue
                self.prepared.put(job)
        finally:
            with self._count_lock:
                self._readers_left -= 1
                last = self._readers_left == 0
            if last:  # one end marker for each inference thread
                for _ in range(self.inferers):
                    self.prepared.put(_DONE)

    # -- stage 2: tiling and inference -----------------------------------------------------
    def _jobs(self) -> Iterator[tuple[Job, np.ndarray]]:
        """This inference thread's jobs, until its end marker."""
        while True:
            job = self.prepared.get()
            if job is _DONE:
                return
            if self.stop.is_set():
                continue  # dropped unwritten: the next run does it
            network_input, job.network_input = job.network_input, None
            if job.first_look:
                try:
                    network_input, answer = look_first(job, network_input, self._predict, self.spec,
                                                       self.engine, self.threshold, self.config.overlays)
                except Exception as exc:  # noqa: BLE001 - one image must not stop the run
                    self._record(inference_error(job, exc))
                    continue
                if answer is not None:  # the first look is the answer
                    self.predicted.put((job, answer))
                    continue
            yield job, network_input

    def _batcher(self) -> None:
        ended = False  # this thread's end marker taken

        def jobs() -> Iterator[tuple[Job, np.ndarray]]:
            nonlocal ended
            yield from self._jobs()
            ended = True

        try:
            for job, probability, error in stream_tiled(jobs(), self._predict, self.spec):
                if error is not None:
                    self._record(inference_error(job, error))
                else:
                    self.predicted.put((job, probability[0]))
        except Exception as exc:  # noqa: BLE001 - a broken engine stops the run, it must not hang it
            self._fail_run(f"the engine stopped working: {one_line(exc)}")
            if not ended:
                for _ in self._jobs():  # drain, so that readers blocked on the queue can finish
                    pass
        finally:
            with self._count_lock:
                self._inferers_left -= 1
                last = self._inferers_left == 0
            if last:  # one end marker for each writer
                for _ in range(self.config.workers):
                    self.predicted.put(_DONE)

    # -- stage 3: writers ------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            entry = self.predicted.get()
            if entry is _DONE:
                return
            job, probability = entry
            if self.report.fatal:
                continue  # keep draining, so that the batcher never blocks
            try:
                self._write_one(job, probability)
            except Exception as exc:  # noqa: BLE001 - never a traceback, never a hang
                self._fail_run(f"internal error while writing {job.item.name}: {one_line(exc)}")

    def _write_one(self, job: Job, probability: np.ndarray) -> None:
        """Finish, write and record one image; a full or read-only disk stops the run."""
        try:
            result = finish_one(job, probability, self.threshold, self.paths, self.config)
        except FatalWriteError as exc:
            self._fail_run(str(exc))
            return
        self._record(record_identifiers(self.identifiers, identifier_cells(job, result, self.config), result))


# -- the per-image steps every run path takes (local threads, Ray tasks and actors) -----------
class FatalWriteError(Exception):
    """No other image could be written either (a full or read-only disk): the run stops."""


def load_one(item: Item, partners: Partners, pre: Preprocessing, config: SegmentConfig,
             align: int = 8) -> Job | ImageResult:
    """Stage 1 for one image: its ``Job``, or its ``error`` row when it cannot be read.

    ``align``: the engine's tile multiple (``stages.load`` aligns the FOV box to it).
    """
    started = time.perf_counter()
    try:
        job = load(item, partners, pre, config.max_pixels, align, config.scale_rule)
    except StageError as exc:
        return error_result(item, str(exc), started)
    except Exception as exc:  # noqa: BLE001 - one image must not stop the run
        return error_result(item, one_line(exc), started)
    if not config.overlays and not job.first_look:
        job.rgb = None  # only the overlay needs the photograph (and the calibre rule's rescale)
    return job


def look_first(job: Job, network_input: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], spec: TileSpec,
               engine: Engine, threshold: float, overlays: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The calibre rule's first look (``job.first_look``) for one image, the same on every run path.

    ``network_input``: ``(1, bh, bw) float32``, the job's FOV box at ``job.factor``. Returns
    ``(input to tile, None)`` when the vessels call for another scale (``stages.rescale``), or
    ``(None, probability)`` when the first look's ``(bh, bw) float32`` probability is the answer.
    Errors propagate: the caller makes them the image's error row.
    """
    first = sliding_window(network_input, predict, spec)[0]
    rescaled = rescale(job, first, engine.info.preprocessing, threshold, max(1, engine.info.tile_multiple))
    if not overlays:
        job.rgb = None
    return (None, first) if rescaled is None else (rescaled, None)


def inference_error(job: Job, error: BaseException) -> ImageResult:
    """The ``error`` row of an image whose tiles the engine could not run."""
    return error_result(job.item, f"inference failed: {one_line(error)}", job.started)


def finish_one(job: Job, probability: np.ndarray, threshold: float, paths: OutputPaths, config: SegmentConfig) -> ImageResult:
    """Stages 3 and 4 for one image: its row, ``ok`` or ``error``.

    ``probability``: ``(h, w) float32`` at model scale. Raises ``FatalWriteError`` on a full
    or read-only disk (files already written stay valid).
    """
    try:
        # The image's own pixel size (a DICOM input's Pixel Spacing) first, else --pixel-size.
        pixel_size = job.pixel_size_um if job.pixel_size_um is not None else config.pixel_size_um
        mask, result = finish(job, probability, threshold, pixel_size)
        write(job, mask, paths, config.overlays, config.save_probabilities, threshold, config.dicom_seg)
    except OSError as exc:
        if exc.errno in FATAL_ERRNOS:
            fix = "make it writable" if exc.errno == errno.EROFS else "free space"
            raise FatalWriteError(f"cannot write into {paths.out}: {exc.strerror}; {fix} or "
                                  "choose another --out, then rerun to finish the rest") from None
        where = f" ({exc.filename})" if exc.filename else ""
        return error_result(job.item, f"cannot write outputs: {exc.strerror or exc}{where}", job.started)
    except StageError as exc:
        return error_result(job.item, str(exc), job.started)
    except Exception as exc:  # noqa: BLE001 - one image must not stop the run
        return error_result(job.item, one_line(exc), job.started)
    return replace(result, seconds=time.perf_counter() - job.started)


def record_identifiers(writer: ResultsWriter | None, cells: dict[str, str] | None, result: ImageResult) -> ImageResult:
    """Append an image's ``identifier_cells`` to ``writer`` (the run's identifiers file) before its
    row is recorded; the row to record: ``result``, or an ``error`` row when that write fails."""
    if writer is None or cells is None:
        return result
    try:
        writer.append_cells(cells)
    except OSError as exc:
        return ImageResult(result.image, "error", result.seconds,
                           error=f"cannot write {writer.path.name}: {exc.strerror or exc}")
    return result


def one_line(exc: BaseException) -> str:
    """An exception as one line for a person: ``Type: message``."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
