"""``segment --ray local`` (Ray Data on this machine's 2 CPUs, started inside the test) against a
one-process run: byte-identical masks and the same rows; a worker killed mid-run loses nothing.

Ray starts once for the module (several seconds) and stops after it.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'vesselseg[ray]'")

import segment_fakes  # noqa: E402
from run_checks import assert_same_outputs, copy_drive  # noqa: E402
from segment_fakes import KillOnce  # noqa: E402
from vesselcli import pipeline  # noqa: E402
from vesselcli.cli import main  # noqa: E402
from vesselcli.config import SegmentConfig  # noqa: E402
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
    yield base
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_ray_local_equals_one_process(one_process: Path, model_file: Path) -> None:
    out = one_process / "ray"
    result = CliRunner().invoke(main, ["segment", str(one_process / "in"), "-o", str(out), "--model",
                                       str(model_file), "--ray", "local"])
    assert result.exit_code == 0, result.output
    import ray

    assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 1  # started here by --ray local
    assert "4 images, Ray (local)" in result.output
    assert_same_outputs(one_process / "one", out)
    again = CliRunner().invoke(main, ["segment", str(one_process / "in"), "-o", str(out), "--model",
                                      str(model_file), "--ray", "local"])
    assert again.exit_code == 0 and "skipping 4 image(s) already done" in again.output


def test_a_worker_killed_mid_run_loses_nothing(one_process: Path, model_file: Path, tmp_path: Path) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(segment_fakes)  # the actors cannot import the tests folder
    marker = tmp_path / "killed"
    config = SegmentConfig(inputs=(one_process / "in",), out=one_process / "killed")
    seen: list[str] = []
    options = ray_data.RayOptions("local", model=model_file, hook=KillOnce(marker))
    engine = open_engine(model_file, "auto", "cpu")  # the driver's: it describes the model
    try:
        report = ray_data.run(config, pipeline.plan(config), engine, options, threading.Event(),
                              on_result=lambda result: seen.append(result.image))
    finally:
        engine.close()
    assert marker.read_text().strip(), "the hook never killed a worker"
    assert (report.done, report.failed, report.exit_code) == (4, 0, 0)
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 4  # each image recorded once
    assert_same_outputs(one_process / "one", one_process / "killed")
