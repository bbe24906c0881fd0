"""Engine calls from several inference threads at once: the pipeline's use of a CPU engine's cores."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from segment_fakes import DarkIsVessel, write_fundus
from vesselcli.run import pipeline
from vesselcli.run.config import SegmentConfig
from vesselcli.io.imageio import read_grey


class TwoCallsAtOnce(DarkIsVessel):
    """A fake engine set up for two calls at once; records how many ran together."""

    parallel_calls = 2

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.05)  # long enough for the other inference thread to come in
        try:
            return super().infer(batch)
        finally:
            with self._lock:
                self.running -= 1


def _config(tmp_path: Path, **options) -> SegmentConfig:
    return SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / "out", tile_size=128, tile_overlap=8,
                         batch_size=1, **options)


def test_an_engine_set_up_for_two_calls_gets_two_at_once_and_every_image_is_written(tmp_path: Path) -> None:
    for i in range(8):
        write_fundus(tmp_path / "in" / f"{i}.png", 96, 100 + i, seed=i)
    engine = TwoCallsAtOnce()
    cfg = _config(tmp_path)
    report = pipeline.run(cfg, pipeline.plan(cfg), engine)
    assert (report.done, report.failed, report.exit_code) == (8, 0, 0)
    assert engine.most_at_once == 2
    for i in range(8):
        assert read_grey(cfg.out / "masks" / f"{i}.png").shape == (96, 100 + i)
    lines = (cfg.out / "results.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == [f"{i}.png" for i in range(8)]  # input order


def test_the_same_masks_with_one_inference_thread_and_with_two(tmp_path: Path) -> None:
    for i in range(5):
        write_fundus(tmp_path / "in" / f"{i}.png", 90 + 7 * i, 110, seed=i)
    one = _config(tmp_path)
    pipeline.run(one, pipeline.plan(one), DarkIsVessel())
    two = SegmentConfig(**{**one.__dict__, "out": tmp_path / "two"})
    pipeline.run(two, pipeline.plan(two), TwoCallsAtOnce())
    for i in range(5):
        assert (one.out / "masks" / f"{i}.png").read_bytes() == (two.out / "masks" / f"{i}.png").read_bytes()


def test_stopping_with_two_inference_threads_ends_the_run(tmp_path: Path) -> None:
    for i in range(10):
        write_fundus(tmp_path / "in" / f"{i:02d}.png", seed=i)
    stop = threading.Event()
    engine = TwoCallsAtOnce(on_infer=lambda calls: stop.set() if calls == 2 else None)
    cfg = _config(tmp_path, workers=2)
    report = pipeline.run(cfg, pipeline.plan(cfg), engine, stop=stop)
    assert report.remaining > 0 and report.failed == 0
    assert sorted(p.name for p in (cfg.out / "masks").iterdir()) == sorted(
        line.split(",")[0] for line in (cfg.out / "results.csv").read_text().splitlines()[1:])


def test_auto_batch_is_one_tile_per_call_for_parallel_calls_and_two_otherwise(tmp_path: Path) -> None:
    auto = SegmentConfig(inputs=(), out=tmp_path)
    assert auto.tile_spec(8, parallel_calls=2).batch == 1
    assert auto.tile_spec(8).batch == 2
    chosen = SegmentConfig(inputs=(), out=tmp_path, batch_size=3)
    assert chosen.tile_spec(8, parallel_calls=2).batch == chosen.tile_spec(8).batch == 3
    for i in range(4):
        write_fundus(tmp_path / "in" / f"{i}.png", 96, 100, seed=i)  # same size: batches could form
    engine = TwoCallsAtOnce()
    cfg = SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / "out", tile_size=128, tile_overlap=8)
    assert pipeline.run(cfg, pipeline.plan(cfg), engine).done == 4
    assert [shape[0] for shape in engine.batches] == [1, 1, 1, 1]


def test_onnx_runtime_on_the_cpu_splits_the_cores_between_its_calls(model_file: Path) -> None:
    from vesselcli.engines.onnxruntime import OnnxRuntimeEngine, cpu_threads

    cores = cpu_threads()
    one = OnnxRuntimeEngine(model_file, "cpu")
    two = OnnxRuntimeEngine(model_file, "cpu", parallel_calls=2)
    assert one.parallel_calls == 1 and two.parallel_calls == min(2, cores)
    threads = two._session.get_session_options().intra_op_num_threads
    assert threads == max(1, cores // two.parallel_calls)
    x = np.random.default_rng(0).standard_normal((1, 1, 96, 104)).astype(np.float32)
    assert np.array_equal(one.infer(x), two.infer(x))  # the same bits whatever the split


def test_segment_opens_a_cpu_engine_for_two_calls(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    import vesselcli.engines
    from vesselcli.cli import main

    asked = {}

    def choose(model, kind, device, **options):  # noqa: ANN001, ANN003
        asked.update(options)
        return vesselcli.engines.Selection(DarkIsVessel())

    monkeypatch.setattr(vesselcli.engines, "choose_engine", choose)
    write_fundus(tmp_path / "in" / "a.png")
    result = CliRunner().invoke(main, ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert asked.get("parallel_calls") == pipeline.CPU_PARALLEL_CALLS == 2
