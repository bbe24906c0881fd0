"""``segment --ray ADDRESS``: the same run on Ray Data, for a cluster (``pip install 'vesselseg[ray]'``).

::

    driver: plan, ledger (lock, resume, results.csv)            (vesselcli.run.ledger)
      -> from_items(images to do)
    on a cluster with GPUs:
      -> map_batches(load_images)      CPU tasks: decode, FOV, prepare  (pipeline.load_one)
      -> map_batches(Segmenter)        actor pool, one engine and one GPU per actor: tiles
                                       batched across images (tiling.stream_tiled with
                                       pipeline.predictor)
      -> map_batches(write_images)     CPU tasks: resize back, threshold, metrics, encode, atomic
                                       writes (pipeline.finish_one)
    on a CPU-only cluster:
      -> map_batches(SegmentOnCpu)     actor pool, one engine per actor, one actor per CPU: the
                                       same three steps, one image after another, in the actor
      -> driver: one row per image into results.csv as they arrive (with --keep-identifiers,
                 its identifiers row into identifiers.csv first), progress, summary

Every step is the function the local pipeline's threads call, so the masks are byte for byte
and the rows cell for cell those of a local run (``seconds`` aside). Inputs and OUT must be
on storage every node sees at the same path (workers read and write them directly); only
rows travel back to the driver.

Why two layouts: a GPU actor must not wait for decoding and encoding, so CPU tasks do them
beside it and images travel between them through Ray's object store. Where the engine itself
runs on the CPU there is nothing to keep fed: separate tasks would only add a process per
stage and two trips through the object store per image, and a many-thread engine would idle
while its actor decodes and encodes; one 1-thread engine per CPU doing all three steps keeps
every core busy (measured against the split layout on 2 cores: README, Scale-out).

Failures: a bad image is an ``error`` row, never a failed task. A worker or node that dies
takes its batch with it: Ray Data restarts the actor (or reruns the task) and reruns the
batch (files are written whole, by rename, and a row is written by the driver only once an
image's files are, so nothing is half-written; an image already written is rewritten with the
same bytes). Ray's default is to rerun it for ever, so an image that kills its worker every
time (a decoder crash, out of memory) would never let the run end: a task is tried at most
``WORKER_LOSSES`` times (Ray Core's ``max_task_retries`` for the actors, ``max_retries`` for
the tasks), then Ray Data gives it up (``max_errored_blocks = -1``) and the driver writes
``error`` rows ("lost: ...") for the images of that task (whole blocks of ``IMAGES_PER_BLOCK``,
bundled up to ``IMAGES_PER_ACTOR_CALL`` images at least): that one and the others of its
task, even those of a batch finished before in it (their rows die with the task; a rerun
redoes them), and those of any other task in flight on the same actor (Ray Data sends an actor
up to 4; each death takes them all, so they use up their tries together). An error our own code raises in an actor makes the batch's images ``error``
rows naming it. The run goes on.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .config import SegmentConfig
from ..io.discover import Item, OutputPaths
from ..engines.base import Engine, ModelInfo
from .pipeline import (FatalWriteError, Plan, finish_one, identifier_cells, inference_error, load_one,
                       look_first, one_line, predictor, record_identifiers, run_settings)
from .report import ImageResult, Report
from .stages import Job, Partners, error_result
from ..imaging.tiling import TileSpec, stream_tiled
from .ledger import Ledger, open_ledger

# The unit Ray reruns when a worker is lost. 4 (one actor call) rather than 2: half the blocks
# for Ray Data to schedule and track (200 DRIVE images with --ray local, medians of 3:
# 19.0 -> 18.2 s together with the Ray Data import beside ray.init; shared 2-core machine).
IMAGES_PER_BLOCK = 4
IMAGES_PER_ACTOR_CALL = 4
#: Tries of one actor task (or load/write task) whose worker dies before its images become ``error`` rows.
WORKER_LOSSES = 3
#: Ray's retry bounds for that (``map_batches`` passes them to ``ray.remote``; Ray Data's defaults
#: are -1, for ever); actors still restart without bound, as other batches need them. Ray 2.60
#: names no ``map_batches`` parameter for them, so they go as ``**ray_remote_args``, which it
#: deprecates for removal in 2.64 (a ``RayDeprecationWarning`` that Ray shows once per module;
#: ``_dataset`` silences that one message, which says nothing a user can act on).
_ACTOR_RETRIES = {"max_restarts": -1, "max_task_retries": WORKER_LOSSES - 1}
_TASK_RETRIES = {"max_retries": WORKER_LOSSES - 1}


class RayError(RuntimeError):
    """Ray is not installed or the cluster cannot be reached; the message says what to do."""


@dataclass(frozen=True)
class RayOptions:
    """``address``: ``local`` (start Ray here), ``auto`` (join the running cluster) or an address.

    ``actors``: engine actors (None: see ``layout``); ``model``, ``engine``,
    ``device``, ``precision``: what each actor opens (as ``open_engine``). ``hook``: a picklable callable the
    actor calls with the names of each batch before inferring it (tests kill a worker there).
    """

    address: str
    actors: int | None = None
    model: Path | None = None
    engine: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    hook: Callable[[list[str]], None] | None = None


@dataclass(frozen=True)
class _Fatal:
    message: str  # a full or read-only disk: the run stops


# -- what travels between stages: pickles of Job, (Job, probability), ImageResult, and at the
# end (ImageResult, identifiers row or None) or _Fatal ----
# A Job's ``started`` is a perf_counter() reading, which means nothing in another process:
# it travels as wall-clock time and is turned back on arrival.
def _pack(entry: Any) -> bytes:
    job = entry[0] if isinstance(entry, tuple) else entry
    if isinstance(job, Job):
        job.started = time.time() - (time.perf_counter() - job.started)
    return pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(blob: bytes) -> Any:
    entry = pickle.loads(blob)
    job = entry[0] if isinstance(entry, tuple) else entry
    if isinstance(job, Job):
        job.started = time.perf_counter() - (time.time() - job.started)
    return entry


def _column(blobs: list[bytes]) -> dict[str, np.ndarray]:
    column = np.empty(len(blobs), dtype=object)
    column[:] = blobs
    return {"payload": column}


def load_images(batch: Mapping[str, np.ndarray], config: SegmentConfig, info: ModelInfo) -> dict[str, np.ndarray]:
    """Ray task: ``(Item, Partners)`` pickles -> ``Job`` (or error row) pickles."""
    out = []
    for blob in batch["payload"]:
        item, partners = pickle.loads(blob)
        out.append(_pack(load_one(item, partners, info.preprocessing, config, max(1, info.tile_multiple))))
    return _column(out)


class Segmenter:
    """Ray actor: one engine, loaded once; ``Job`` pickles -> ``(Job, probability)`` pickles.

    ``threads``: the engine's CPU threads (None: the engine's default, every CPU it may use).
    """

    def __init__(self, options: RayOptions, tta: bool, spec: TileSpec, threshold: float, overlays: bool,
                 threads: int | None = None) -> None:
        from ..engines import open_engine

        self.engine = open_engine(options.model, options.engine, options.device, precision=options.precision,
                                  threads=threads)
        self.predict = predictor(self.engine, tta)
        self.spec = spec
        self.threshold = threshold
        self.overlays = overlays
        self.hook = options.hook

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries = [_unpack(blob) for blob in batch["payload"]]
        try:
            answers = self.infer(entries)
        except Exception as exc:  # noqa: BLE001 - error rows, never a failed batch
            answers = [_batch_error(e.item, exc, e.started) if isinstance(e, Job) else e for e in entries]
        return _column([_pack(entry) for entry in answers])

    def infer(self, entries: list[Job | ImageResult]) -> list[tuple[Job, np.ndarray] | ImageResult]:
        """Each ``Job`` -> ``(Job, (h, w) float32 probability)`` or its error row; rows pass through."""
        jobs = [e for e in entries if isinstance(e, Job)]
        if self.hook is not None:
            self.hook([job.item.name for job in jobs])

        done: dict[int, Any] = {}

        def inputs() -> Iterator[tuple[Job, np.ndarray]]:
            for job in jobs:
                network_input, job.network_input = job.network_input, None
                if job.first_look:  # --scale-rule calibre, as pipeline._Run._jobs does it
                    try:
                        network_input, answer = look_first(job, network_input, self.predict, self.spec,
                                                           self.engine, self.threshold, self.overlays)
                    except Exception as exc:  # noqa: BLE001 - one image must not stop the run
                        done[id(job)] = inference_error(job, exc)
                        continue
                    if answer is not None:
                        done[id(job)] = (job, answer)
                        continue
                yield job, network_input

        for job, probability, error in stream_tiled(inputs(), self.predict, self.spec):
            done[id(job)] = inference_error(job, error) if error is not None else (job, probability[0])
        return [done[id(e)] if isinstance(e, Job) else e for e in entries]


class SegmentOnCpu(Segmenter):
    """Ray actor for clusters without GPUs: ``(Item, Partners)`` pickles -> ``_finish`` pickles,
    loading, inferring and writing each batch in this process."""

    def __init__(self, options: RayOptions, tta: bool, spec: TileSpec, threshold: float, config: SegmentConfig,
                 info: ModelInfo, threads: int | None = None) -> None:
        super().__init__(options, tta, spec, threshold, config.overlays, threads)
        self.config = config
        self.info = info
        self.paths = OutputPaths(Path(config.out))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        align = max(1, self.info.tile_multiple)
        todo = [pickle.loads(blob) for blob in batch["payload"]]
        try:
            loaded = [load_one(item, partners, self.info.preprocessing, self.config, align) for item, partners in todo]
            answers = [_finish(entry, self.threshold, self.paths, self.config) for entry in self.infer(loaded)]
        except Exception as exc:  # noqa: BLE001 - error rows, never a failed batch
            answers = [(_batch_error(item, exc), None) for item, _ in todo]
        return _column([pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL) for answer in answers])


def _batch_error(item: Item, exc: BaseException, started: float | None = None) -> ImageResult:
    """The ``error`` row of an image whose batch raised in an actor (a bug, not the image's fault alone)."""
    return error_result(item, f"failed in its Ray batch: {one_line(exc)}; rerun the same command to retry", started)


def write_images(batch: Mapping[str, np.ndarray], config: SegmentConfig, threshold: float) -> dict[str, np.ndarray]:
    """Ray task: ``(Job, probability)`` pickles -> ``_finish`` pickles."""
    paths = OutputPaths(Path(config.out))
    return _column([pickle.dumps(_finish(_unpack(blob), threshold, paths, config), protocol=pickle.HIGHEST_PROTOCOL)
                    for blob in batch["payload"]])


def _finish(entry: tuple[Job, np.ndarray] | ImageResult, threshold: float, paths: OutputPaths,
            config: SegmentConfig) -> tuple[ImageResult, dict[str, str] | None] | _Fatal:
    """``pipeline.finish_one`` of an inferred image: its row and its ``identifier_cells`` (for the
    driver to write); an error row passes through."""
    if not isinstance(entry, tuple):
        return entry, None
    job, probability = entry
    try:
        result = finish_one(job, probability, threshold, paths, config)
    except FatalWriteError as exc:
        return _Fatal(str(exc))
    return result, identifier_cells(job, result, config)


# -- the driver ---------------------------------------------------------------------------------
def _import_ray():  # noqa: ANN202 - the ray module
    """Ray's core module (Ray Data is imported by ``connect``, beside ``ray.init``)."""
    try:
        import ray
    except ImportError as exc:
        raise _without_ray_data(exc) from None
    return ray


def _import_ray_data_beside(start: Callable[[], None]) -> None:
    """Import Ray Data in a thread while ``start()`` (``ray.init``) runs in this one.

    Ray Data (and the pandas and pyarrow it imports) takes about 0.6 s of one core to import,
    and ``ray.init`` spends most of its 2-3 s waiting for the processes it starts: side by
    side, the import no longer adds to the run's start-up. Only the import goes to the thread
    (``ray.init`` in a thread hung the next Ray call)."""
    failure: list[BaseException] = []

    def load() -> None:
        try:
            import ray.data  # noqa: F401 - Ray Data is the part we need
        except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
            failure.append(exc)

    loader = threading.Thread(target=load, name="import ray.data", daemon=True)
    loader.start()
    try:
        start()
    finally:
        loader.join()
    if failure:
        raise _without_ray_data(failure[0])


def _without_ray_data(exc: BaseException) -> RayError:
    return RayError(f"--ray needs Ray Data ({exc}); install it with: pip install 'vesselseg[ray]'")


def connect(address: str):  # noqa: ANN201 - the ray module
    """Join (``auto``, an address) or start (``local``) Ray, unless this process already has."""
    ray = _import_ray()
    if ray.is_initialized():  # nothing to wait for beside the import
        try:
            import ray.data  # noqa: F401 - Ray Data is the part we need
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install's own error
            raise _without_ray_data(exc) from None
        return ray
    # The driver's C++ core logs a warning per restartable actor with arguments in the object
    # store (ours: the model options) to stderr; the CLI prints its own progress and errors.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")

    def start() -> None:
        try:
            if address == "local":
                # address="local", not None: None would join a cluster named by RAY_ADDRESS or
                # left by `ray start` on this machine instead of starting one.
                ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; all mean the same to a user
            raise RayError(f"cannot start or join Ray at {address!r}: {' '.join(str(exc).split())}; start a "
                           "cluster with `ray start --head` (then --ray auto), or use --ray local") from None

    _import_ray_data_beside(start)
    return ray


@dataclass(frozen=True)
class Layout:
    """How the engine actors are laid out on the cluster.

    ``actors`` engine actors, each holding ``gpus`` GPUs (1 or 0) and ``cpus`` CPUs, with an
    engine of ``threads`` CPU threads (None: the engine's default). ``fused``: each actor also
    loads and writes its images (``SegmentOnCpu``); otherwise CPU tasks beside the actors do.
    """

    actors: int
    gpus: float
    cpus: int = 1
    threads: int | None = None
    fused: bool = False


def layout(total: Mapping[str, float], node_cpus: list[float], actors: int | None, device: str) -> Layout:
    """The ``Layout`` for a cluster of ``total`` resources (Ray's ``cluster_resources()``) whose
    live nodes have ``node_cpus`` CPUs each, with ``--ray-actors`` ``actors`` and ``--device``.

    With GPUs (and not ``--device cpu``): one actor per GPU. Without: one actor per CPU, each
    a 1-thread engine (one image at a time through all three steps keeps its core busy; several
    threads would idle during decoding and encoding); with ``actors`` given, the cluster's
    CPUs are shared out among them (at most a node's worth each, as an actor runs on one node).
    """
    gpus = int(total.get("GPU", 0))
    if device != "cpu" and gpus and (actors is None or gpus >= actors):
        return Layout(actors or gpus, 1.0)
    cpus = int(total.get("CPU", 0))
    if actors is None:
        return Layout(max(1, cpus), 0.0, 1, 1, fused=True)
    share = max(1, min(cpus // actors, int(max(node_cpus, default=1))))
    return Layout(actors, 0.0, share, share, fused=True)


def run(
    config: SegmentConfig,
    the_plan: Plan,
    model: Engine,
    ray_options: RayOptions,
    stop: threading.Event | None = None,
    on_start: Callable[[Report], None] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Report:
    """Segment ``the_plan`` on Ray into ``config.out``; the run's ``Report``.

    ``model``: the model opened on the driver, which describes it (preprocessing, threshold,
    tiling, settings); the actors open their own per ``ray_options``. ``options``: the CLI's,
    for run.json. Raises what ``pipeline.run`` raises, and ``RayError`` when Ray is missing
    or unreachable.
    """
    stop = stop or threading.Event()
    ray = _import_ray()
    settings = run_settings(config, model)
    engine, device = f"{ray_options.engine} (Ray actors)", f"Ray {ray_options.address}, {ray_options.device}"
    connected_here = False
    try:
        with open_ledger(config, the_plan.items, the_plan.positions, settings, engine, device, options) as ledger:
            if on_start is not None:
                on_start(ledger.report)
            if ledger.todo:
                connected_here = not ray.is_initialized()
                connect(ray_options.address)
                _stream(ray, config, the_plan.partners, model.info, ray_options, ledger, stop, on_result)
    finally:
        if connected_here:
            # Stop the Ray this run started (local) or leave the cluster it joined, now: Ray's
            # own exit hook would do the same, after a half-second pause for log lines we
            # do not print (log_to_driver=False).
            shutdown(ray)
    return ledger.report


def shutdown(ray) -> None:  # noqa: ANN001 - the ray module
    """``ray.shutdown()``, a second sooner for a cluster this process started.

    Ray stops its processes one by one, giving each a second to exit on SIGTERM. Its autoscaler
    monitor spends that second trying to report its own end to the GCS, already stopped
    before it, and is then SIGKILLed: killing it first (it holds nothing: this process's
    cluster ends here) does what Ray does a second later. Reaches into Ray's private node
    object; where that is not there (another Ray version), Ray's own shutdown does it all.
    """
    try:
        node = ray._private.worker._global_node
        monitors = node.all_processes.get("monitor", []) if node is not None and node.is_head() else []
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=1)
    except Exception:  # noqa: BLE001 - any failure here only costs the second back
        pass
    ray.shutdown()


def _dataset(ray, config, partners, info, options, todo):  # noqa: ANN001, ANN202 - ray objects
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its execution plan lines; the CLI reports
    warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows its own
    context.max_errored_blocks = -1  # a batch that fails for good becomes error rows, not a failed run
    threshold = config.threshold if config.threshold is not None else float(info.threshold)
    spec = config.tile_spec(info.tile_multiple, info.fixed_tile)
    nodes = [float(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    plan = layout(ray.cluster_resources(), nodes, options.actors, options.device)
    rows = [{"payload": pickle.dumps((item, partners.get(item.path, Partners())))} for item in todo]
    blocks = max(1, math.ceil(len(rows) / IMAGES_PER_BLOCK))
    items = ray.data.from_items(rows, override_num_blocks=blocks)
    # No more engine actors than blocks: an actor with no block to take would only load a model
    # (and Ray Data warns that the pool cannot be kept busy).
    pool = ray.data.ActorPoolStrategy(size=min(plan.actors, blocks))
    engine_args = {"options": options, "tta": config.tta, "spec": spec, "threshold": threshold, "threads": plan.threads}
    if plan.fused:
        return items.map_batches(SegmentOnCpu, fn_constructor_kwargs={**engine_args, "config": config, "info": info},
                                 batch_size=IMAGES_PER_ACTOR_CALL, compute=pool, num_cpus=plan.cpus, **_ACTOR_RETRIES)
    return (
        items
        .map_batches(load_images, fn_kwargs={"config": config, "info": info}, batch_size=None, num_cpus=0.5,
                     **_TASK_RETRIES)
        .map_batches(Segmenter, fn_constructor_kwargs={**engine_args, "overlays": config.overlays},
                     batch_size=IMAGES_PER_ACTOR_CALL, compute=pool, num_cpus=plan.cpus, num_gpus=plan.gpus,
                     **_ACTOR_RETRIES)
        .map_batches(write_images, fn_kwargs={"config": config, "threshold": threshold}, batch_size=None,
                     num_cpus=0.5, **_TASK_RETRIES)
    )


def _stream(ray, config, partners, info, options, ledger: Ledger, stop, on_result) -> None:  # noqa: ANN001
    """Record each row as it comes back; afterwards, rows for images whose batch was given up."""
    recorded: set[str] = set()
    report = ledger.report
    for row in _dataset(ray, config, partners, info, options, ledger.todo).iter_rows():
        answer = pickle.loads(row["payload"])
        if isinstance(answer, _Fatal):
            report.fatal = answer.message
            break
        entry, cells = answer
        if entry.image in recorded:
            continue  # a rerun batch's second answer
        entry = record_identifiers(ledger.identifiers, cells, entry)
        try:
            ledger.writer.append(entry)
        except OSError as exc:
            report.fatal = f"cannot write {ledger.csv}: {exc.strerror or exc}"
            break
        recorded.add(entry.image)
        report.add(entry)
        if on_result is not None:
            on_result(entry)
        if stop.is_set():
            break
    if report.fatal or stop.is_set():
        return
    for item in ledger.todo:
        if item.name not in recorded:
            lost = error_result(item, f"lost: its Ray worker died {WORKER_LOSSES} times on the task holding it (a "
                                      "crash or out of memory on it or on another image of that task; see Ray's logs "
                                      "under /tmp/ray); rerun the same command to retry")
            ledger.writer.append(lost)
            report.add(lost)
            if on_result is not None:
                on_result(lost)
