"""``segment --ray local`` (Ray Data on this machine's 2 CPUs, started inside the test) against a
one-process run: byte-identical masks and the same rows, in both layouts (CPU actors that load
and write their own images; CPU tasks beside the engine actors, as on GPUs), and the same
identifiers.csv from DICOM inputs; a worker killed mid-run loses nothing.

The CLI test starts Ray through the command, which stops it again; the other tests share one
Ray started for them (several seconds each time).
"""
from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'vesselseg[ray]'")

import segment_fakes  # noqa: E402
from run_checks import assert_same_outputs, copy_drive, rows_without_seconds  # noqa: E402
from segment_fakes import KillOnce, KillWhenever, RaiseOn  # noqa: E402
from vesselcli.run import pipeline  # noqa: E402
from vesselcli.cli import main  # noqa: E402
from vesselcli.run.config import SegmentConfig  # noqa: E402
from vesselcli.engines import open_engine  # noqa: E402
from vesselcli.run import ray_data  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, drive_root: Path, model_file: Path) -> Path:
    """Four DRIVE test images segmented by one local process; the folder holds ``in`` and ``one``."""
    base = tmp_path_factory.mktemp("ray")
    src = copy_drive(drive_root, base / "in")
    result = CliRunner().invoke(main, ["segment", str(src), "-o", str(base / "one"), "--model", str(model_file), "-q"])
    assert result.exit_code == 0, result.output
    return base


@pytest.fixture(scope="module")
def ray_running() -> Iterator[None]:
    """Ray on this machine for the tests that call ``ray_data.run`` (a run leaves running a Ray it did not start)."""
    ray = ray_data.connect("local")
    yield
    ray_data.shutdown(ray)


def test_ray_local_equals_one_process(one_process: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch,
                                      recwarn: pytest.WarningsRecorder) -> None:
    import ray

    assert not ray.is_initialized(), "this test runs first: --ray local must start Ray itself"
    started = []
    connect = ray_data.connect

    def spy(address: str):  # noqa: ANN202 - the ray module
        module = connect(address)
        started.append(module.cluster_resources())
        started.append(descendants(os.getpid()))  # GCS, raylet, monitor, dashboard, workers
        return module

    monkeypatch.setattr(ray_data, "connect", spy)
    # "local" starts Ray here even where RAY_ADDRESS (or a `ray start` on this machine) names
    # another cluster: nothing listens at this address, and joining it would fail the run.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    out = one_process / "ray"
    result = CliRunner().invoke(main, ["segment", str(one_process / "in"), "-o", str(out), "--model",
                                       str(model_file), "--ray", "local"])
    assert result.exit_code == 0, result.output
    assert started and started[0].get("CPU", 0) >= 1  # started here by --ray local
    assert not ray.is_initialized()  # and stopped by the run that started it, not at the interpreter's exit
    assert len(started[1]) >= 3 and not alive(started[1]), "Ray's processes outlived the run"
    assert "4 images, Ray (local)" in result.output
    # Nothing a user cannot act on: Ray's deprecation of the retry arguments, or its warning that
    # a pool of 2 actors (2 CPUs) cannot be kept busy by 4 images (one block).
    noise = [str(w.message) for w in recwarn if "ray_remote_args" in str(w.message) or "concurrent actors" in str(w.message)]
    assert not noise, noise
    assert_same_outputs(one_process / "one", out)
    again = CliRunner().invoke(main, ["segment", str(one_process / "in"), "-o", str(out), "--model",
                                      str(model_file), "--ray", "local"])
    assert again.exit_code == 0 and "skipping 4 image(s) already done" in again.output


def test_keep_identifiers_on_ray_writes_the_one_process_identifiers_csv(drive_root: Path, model_file: Path,
                                                                        ray_running: None, tmp_path: Path) -> None:
    pytest.importorskip("pydicom", reason="DICOM inputs need pydicom (pip install 'vesselseg[dicom]')")
    import dicom_factory as make
    from vesselcli.io.imageio import read_image

    one, two = (read_image(drive_root / "test" / "images" / f"{n}_test.tif") for n in ("01", "02"))
    src = tmp_path / "in"
    make.save(make.photograph(one, "1.2.826.0.1.3680043.8.498.501", frames=[one, two]), src / "multi.dcm")
    make.save(make.photograph(two, "1.2.826.0.1.3680043.8.498.502"), src / "IM0002")
    segment = ["segment", str(src), "--model", str(model_file), "--keep-identifiers", "-q"]
    local = CliRunner().invoke(main, [*segment, "-o", str(tmp_path / "one")])
    assert local.exit_code == 0, local.output
    on_ray = CliRunner().invoke(main, [*segment, "-o", str(tmp_path / "ray"), "--ray", "local"])
    assert on_ray.exit_code == 0, on_ray.output
    expected = (tmp_path / "one" / "identifiers.csv").read_bytes()
    assert expected.count(b"\n") == 4 and make.IDENTIFIERS["PatientID"].encode() in expected
    assert (tmp_path / "ray" / "identifiers.csv").read_bytes() == expected
    assert_same_outputs(tmp_path / "one", tmp_path / "ray")
    again = CliRunner().invoke(main, [*segment, "-o", str(tmp_path / "ray"), "--ray", "local"])  # resumes: all done
    assert again.exit_code == 0, again.output
    assert (tmp_path / "ray" / "identifiers.csv").read_bytes() == expected


def descendants(pid: int) -> dict[int, str]:
    """``{pid: name}`` of every process below ``pid`` (from /proc)."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        parents.setdefault(int(rest[1]), []).append((int(entry.name), name))
    found, todo = {}, [pid]
    while todo:
        for child, name in parents.get(todo.pop(), []):
            found[child] = name
            todo.append(child)
    return found


def alive(pids: dict[int, str], wait_s: float = 5.0) -> dict[int, str]:
    """Those of ``pids`` still running (not exited, not a zombie) after up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        running = {}
        for pid, name in pids.items():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                running[pid] = name
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def run_with_hook(source: Path, out: Path, model_file: Path, hook) -> tuple[object, list[str]]:  # noqa: ANN001
    """``ray_data.run`` of ``source`` into ``out`` with an actor hook; (report, images recorded)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(segment_fakes)  # the actors cannot import the tests folder
    config = SegmentConfig(inputs=(source,), out=out)
    seen: list[str] = []
    engine = open_engine(model_file, "auto", "cpu")  # the driver's: it describes the model
    try:
        report = ray_data.run(config, pipeline.plan(config), engine, ray_data.RayOptions("local", model=model_file, hook=hook),
                              threading.Event(), on_result=lambda result: seen.append(result.image))
    finally:
        engine.close()
    return report, seen


def test_cpu_tasks_beside_the_engine_actors_as_on_gpus_equal_one_process(one_process: Path, model_file: Path,
                                                                         ray_running: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU clusters' layout (load tasks -> engine actor -> write tasks), run on CPUs."""
    monkeypatch.setattr(ray_data, "layout", lambda *args: ray_data.Layout(1, 0.0, cpus=1, threads=1, fused=False))
    report, seen = run_with_hook(one_process / "in", one_process / "split", model_file, None)
    assert (report.done, report.failed, report.exit_code) == (4, 0, 0) and len(seen) == 4
    assert_same_outputs(one_process / "one", one_process / "split")


def test_a_worker_killed_mid_run_loses_nothing(one_process: Path, model_file: Path, ray_running: None,
                                               tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    report, seen = run_with_hook(one_process / "in", one_process / "killed", model_file, KillOnce(marker))
    assert marker.read_text().strip(), "the hook never killed a worker"
    assert (report.done, report.failed, report.exit_code) == (4, 0, 0)
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 4  # each image recorded once
    assert_same_outputs(one_process / "one", one_process / "killed")


def test_a_batch_that_raises_is_error_rows_not_a_failed_run(one_process: Path, model_file: Path,
                                                            ray_running: None, tmp_path: Path) -> None:
    report, seen = run_with_hook(one_process / "in", tmp_path / "out", model_file, RaiseOn("04_test.tif"))
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as handle:
        rows = {r["image"]: r for r in csv.DictReader(handle)}
    assert sorted(seen) == sorted(rows) == sorted(p.name for p in (one_process / "in").iterdir())
    assert rows["04_test.tif"]["status"] == "error"
    assert rows["04_test.tif"]["error"].startswith("failed in its Ray batch: RuntimeError: a fault injected")
    assert report.failed >= 1 and report.done + report.failed == 4 and report.exit_code == 1


def test_an_image_that_kills_its_worker_every_time_is_an_error_row_after_3_losses(
        one_process: Path, model_file: Path, ray_running: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray would restart the actor and rerun the task for ever; the run ends instead, that task's
    images (the image and the others of its block) error rows, every other image done.

    Blocks and batches of 2 here, so that 4 images make two tasks (by default one block holds 4).
    When Ray Data has sent the other task to the same actor (up to 4 tasks in flight per actor),
    each death takes it too and it is lost with the first: then all four are error rows."""
    monkeypatch.setattr(ray_data, "IMAGES_PER_BLOCK", 2)
    monkeypatch.setattr(ray_data, "IMAGES_PER_ACTOR_CALL", 2)
    log = tmp_path / "kills"
    ended: list[tuple[object, list[str]]] = []
    runner = threading.Thread(target=lambda: ended.append(run_with_hook(
        one_process / "in", tmp_path / "out", model_file, KillWhenever("04_test.tif", log))), daemon=True)
    runner.start()
    runner.join(timeout=240)
    assert ended, f"the run did not end in 240 s; kills so far: {log.read_text() if log.exists() else 0}"
    report, seen = ended[0]
    kills = log.read_text().splitlines()
    assert len(kills) == ray_data.WORKER_LOSSES == 3, kills
    batch = set(kills[0].split())
    assert "04_test.tif" in batch and all(set(k.split()) == batch for k in kills)  # the same batch each time
    assert len(batch) == 2, "the killed batch must be one block of two: then the other block shows what is kept"
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as handle:
        rows = {r["image"]: r for r in csv.DictReader(handle)}
    assert sorted(seen) == sorted(rows) == sorted(p.name for p in (one_process / "in").iterdir())
    lost = {name for name, row in rows.items() if row["status"] == "error"}
    assert lost == batch or len(lost) == 4, lost  # the killed block, or both blocks when they shared the actor
    for name in lost:
        assert rows[name]["error"].startswith("lost: its Ray worker died 3 times on the task holding it"), rows[name]["error"]
    assert (report.failed, report.done, report.exit_code) == (len(lost), 4 - len(lost), 1)
    one = {r["image"]: r for r in rows_without_seconds(one_process / "one" / "results.csv")}
    for row in rows_without_seconds(tmp_path / "out" / "results.csv"):
        if row["image"] not in lost:
            assert row == one[row["image"]]
            mask = Path("masks") / (Path(row["image"]).stem + ".png")
            assert (tmp_path / "out" / mask).read_bytes() == (one_process / "one" / mask).read_bytes()
