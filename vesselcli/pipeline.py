"""The streaming ``segment`` pipeline: readers -> tiler + engine -> writers, with bounded queues.

::

    items --> reader threads (decode, FOV, prepare, FOV box) --[queue of `workers`]-->
          --> one batcher thread (tiles of several images per engine batch, blending)
                                                            --[queue of `workers`]-->
          --> writer threads (resize back, threshold, metrics, encode, atomic writes, CSV row)

The queues are bounded, so memory holds a fixed number of images however many there are.
One broken image is one ``error`` row and one call of ``on_result``; the run goes on.
Setting ``stop`` (the CLI does on SIGINT/SIGTERM) stops taking new images: images already in
the engine finish and are written, images read but not yet tiled are dropped unwritten, and
the CSV stays whole. A full or read-only disk stops the run the same way (``Report.fatal``).

DICOM inputs: objects that are not photographs are left out at planning (one warning line
each, ``Plan.skipped``); a multi-frame object is one image per frame. With
``keep_identifiers`` their patient identifiers go to ``identifiers.csv`` (one row per image
done), and nowhere else; without it they are written nowhere.

Resuming: an image is skipped when its mask exists and results.csv has an ``ok`` row for it;
every other row of the images redone is dropped from the CSV first, so no image gets two rows.
Only a run with the settings recorded in ``OUT/run.json`` resumes (``vesselcli.runrecord``);
one with other settings is refused before anything is written, unless ``overwrite``.
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
from .discover import Item, OutputPaths, assign_names, discover, expand_dicom, linked_outputs, walk_images
from .engines.base import Engine, sigmoid
from .imageio import IMAGE_EXTENSIONS
from .io.dicom import DICOM_EXTENSIONS, IDENTIFIER_KEYWORDS
from .lock import OutputLock
from .pairing import pair_files
from .report import ImageResult, Report, ResultsWriter, read_rows
from .runrecord import check_settings, new_record, now, output_settings, write_run
from .stages import Job, Partners, StageError, error_result, finish, load, rescale, write
from .tiling import flip_averaged, sliding_window, stream_tiled

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
    return Plan(items, partners, unannotated, tuple(unlisted), tuple(skipped))


def _pair(images: list[Path], folder: Path | None, pattern: str | None) -> tuple[dict[Path, Path], dict[Path, str]]:
    if folder is None:
        return {}, {}
    pairs, _, errors = pair_files(images, walk_images(Path(folder)), pattern)
    return pairs, errors


#: ``identifiers.csv`` (``--keep-identifiers``): the one file of OUT holding patient identifiers.
IDENTIFIER_COLUMNS = ("image", "patient_name", "patient_id", "patient_birth_date", "accession_number",
                      "study_instance_uid", "series_instance_uid", "sop_instance_uid", "frame")


def _identifier_cells(job: Job) -> dict[str, str]:
    ids = job.identifiers or {}
    names = dict(zip(IDENTIFIER_KEYWORDS, IDENTIFIER_COLUMNS[1:5]))
    cells = {column: ids.get(keyword, "") for keyword, column in names.items()}
    cells.update(image=job.item.name, study_instance_uid=ids.get("StudyInstanceUID", ""),
                 series_instance_uid=ids.get("SeriesInstanceUID", ""), sop_instance_uid=ids.get("SOPInstanceUID", ""),
                 frame="" if job.item.frame is None else str(job.item.frame + 1))
    return cells


def _is_done(item: Item, ok_names: set[str], paths: OutputPaths, dicom_seg: bool = False) -> bool:
    if dicom_seg and item.frame is not None and not paths.dicom_seg(item.key).is_file():
        return False
    mask = paths.mask(item.key)
    return item.name in ok_names and mask.is_file() and not mask.is_symlink()


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.tmp-*`` files a killed run left (we hold the lock: none is being written)."""
    folders = [(str(out), [], [e.name for e in os.scandir(out) if e.is_file()])]
    for folder in ("masks", "overlays", "probabilities", "dicom-seg"):
        folders.extend(os.walk(out / folder))
    for root, _, files in folders:
        for name in files:
            if name.startswith(".tmp-"):
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass


def _predictor(engine: Engine, tta: bool) -> Callable[[np.ndarray], np.ndarray]:
    def predict(batch: np.ndarray) -> np.ndarray:
        return sigmoid(engine.infer(batch))

    return flip_averaged(predict) if tta else predict


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
    when OUT holds outputs made with other settings (and not ``overwrite``),
    ``CsvMismatchError`` when an existing results.csv has other columns, ``OSError`` when the
    output folder cannot be created. ``on_start`` sees the report once the images to skip are
    known; ``on_result`` is called (from worker threads, one call at a time) for every image
    done. ``options``: every CLI option, recorded in run.json as they were given.
    """
    stop = stop or threading.Event()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    linked_outputs(out)  # before the lock: its file is one of them
    paths = OutputPaths(out)
    with OutputLock(paths.lock):
        _remove_stale_temporaries(out)
        settings = run_settings(config, engine)
        rows = [] if config.overwrite else read_rows(paths.csv)
        if not config.overwrite:
            check_settings(out, settings, results_exist=paths.csv.is_file() and paths.csv.stat().st_size > 0)
        ok_names = {r["image"] for r in rows if r.get("status") == "ok"}
        todo = [i for i in the_plan.items if config.overwrite or not _is_done(i, ok_names, paths, config.dicom_seg)]
        redo = {i.name for i in todo}
        kept = list({r["image"]: r for r in rows if r["image"] not in redo}.values())
        report = Report(total=len(the_plan.items), skipped=len(the_plan.items) - len(todo))
        record = new_record(settings, engine.name, engine.device, options or {})
        started = time.monotonic()
        write_run(out, record)  # before any output: whatever is in OUT from now on was made with these
        if on_start is not None:
            on_start(report)
        identifiers = None
        if config.keep_identifiers:
            earlier = [] if config.overwrite else read_rows(paths.identifiers, IDENTIFIER_COLUMNS)
            identifiers = ResultsWriter(paths.identifiers, [r for r in earlier if r["image"] not in redo],
                                        IDENTIFIER_COLUMNS)
        writer = ResultsWriter(paths.csv, kept)
        try:
            _Run(config, the_plan, engine, stop, paths, writer, report, on_result, identifiers).go(todo)
        finally:
            writer.close()
            if identifiers is not None:
                identifiers.close()
            record.update(finished=now(), duration_s=round(time.monotonic() - started, 3),
                          counts={"done": report.done, "failed": report.failed, "skipped": report.skipped})
            try:
                write_run(out, record)
            except OSError:
                pass  # a full disk: the record written at the start still holds the settings
    return report


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
        self.spec = config.tile_spec(engine.info.tile_multiple, engine.info.fixed_tile)
        # Crop to the FOV's box on the model's pooling grid; a fixed-tile engine pads anyway.
        self._align = max(1, engine.info.tile_multiple)
        self._predict = _predictor(engine, config.tta)
        self.prepared: queue.Queue = queue.Queue(maxsize=config.workers)
        self.predicted: queue.Queue = queue.Queue(maxsize=config.workers)
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self._record_lock = threading.Lock()
        self._readers_left = config.workers  # end markers the batcher still waits for

    def go(self, todo: list[Item]) -> None:
        for item in todo:
            self.items.put(item)
        workers = self.config.workers
        threads = [threading.Thread(target=self._reader, name=f"reader-{i}", daemon=True) for i in range(workers)]
        threads.append(threading.Thread(target=self._batcher, name="batcher", daemon=True))
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
                started = time.perf_counter()
                try:
                    job = load(item, self.plan.partners[item.path], pre, self.config.max_pixels, self._align,
                               self.config.scale_rule)
                except StageError as exc:
                    self._record(error_result(item, str(exc), started))
                    continue
                except Exception as exc:  # noqa: BLE001 - one image must not stop the run
                    self._record(error_result(item, _one_line(exc), started))
                    continue
                if not self.config.overlays and not job.first_look:
                    job.rgb = None  # only the overlay needs the photograph: keep memory low
                self.prepared.put(job)
        finally:
            self.prepared.put(_DONE)

    # -- stage 2: tiling and inference -----------------------------------------------------
    def _jobs(self) -> Iterator[tuple[Job, np.ndarray]]:
        while self._readers_left:
            job = self.prepared.get()
            if job is _DONE:
                self._readers_left -= 1
                continue
            if self.stop.is_set():
                continue  # dropped unwritten: the next run does it
            network_input, job.network_input = job.network_input, None
            if job.first_look:
                try:
                    first_look = sliding_window(network_input, self._predict, self.spec)[0]
                    network_input = rescale(job, first_look, self.engine.info.preprocessing, self.threshold, self._align)
                except Exception as exc:  # noqa: BLE001 - one image must not stop the run
                    self._record(error_result(job.item, f"inference failed: {_one_line(exc)}", job.started))
                    continue
                if not self.config.overlays:
                    job.rgb = None
                if network_input is None:  # the first look is the answer
                    self.predicted.put((job, first_look))
                    continue
            yield job, network_input

    def _batcher(self) -> None:
        try:
            for job, probability, error in stream_tiled(self._jobs(), self._predict, self.spec):
                if error is not None:
                    self._record(error_result(job.item, f"inference failed: {_one_line(error)}", job.started))
                else:
                    self.predicted.put((job, probability[0]))
        except Exception as exc:  # noqa: BLE001 - a broken engine stops the run, it must not hang it
            self._fail_run(f"the engine stopped working: {_one_line(exc)}")
            for _ in self._jobs():  # drain, so that readers blocked on the queue can finish
                pass
        finally:
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
                self._fail_run(f"internal error while writing {job.item.name}: {_one_line(exc)}")

    def _write_one(self, job: Job, probability: np.ndarray) -> None:
        """Finish, write and record one image; a full or read-only disk stops the run."""
        try:
            # The image's own pixel size (a DICOM input's Pixel Spacing) first, else --pixel-size.
            pixel_size = job.pixel_size_um if job.pixel_size_um is not None else self.config.pixel_size_um
            mask, result = finish(job, probability, self.threshold, pixel_size)
            write(job, mask, self.paths, self.config.overlays, self.config.save_probabilities, self.threshold,
                  self.config.dicom_seg)
            if self.identifiers is not None and job.identifiers is not None:
                self.identifiers.append_cells(_identifier_cells(job))
        except OSError as exc:
            if exc.errno in FATAL_ERRNOS:
                fix = "make it writable" if exc.errno == errno.EROFS else "free space"
                self._fail_run(f"cannot write into {self.paths.out}: {exc.strerror}; {fix} or "
                               "choose another --out, then rerun to finish the rest")
                return
            where = f" ({exc.filename})" if exc.filename else ""
            result = error_result(job.item, f"cannot write outputs: {exc.strerror or exc}{where}", job.started)
        except StageError as exc:
            result = error_result(job.item, str(exc), job.started)
        except Exception as exc:  # noqa: BLE001 - one image must not stop the run
            result = error_result(job.item, _one_line(exc), job.started)
        else:
            result = replace(result, seconds=time.perf_counter() - job.started)
        self._record(result)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
