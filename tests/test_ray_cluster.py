"""``segment --ray ADDRESS`` on a Ray cluster of two nodes, both on this machine.

Ray's own ``ray.cluster_utils.Cluster`` starts a head node and a second node (a raylet of its
own, with its own workers and object store) here, 1 CPU each, so the engine actors run one on
each node, as on two machines: the driver joins the cluster by its address, as `--ray ADDRESS`
does. What this cannot show: a network between the nodes (both share this machine's file
system and address), which the shared-storage rule of the README covers.

1. ``vesselseg segment IN --ray ADDRESS`` equals a one-process run (masks byte for byte, the
   same rows), with batches done on both nodes.
2. The second node is removed (its raylet and workers killed, as a lost machine) while one of
   its actors is in the middle of a batch: the run still loses nothing and equals a
   one-process run.
"""
from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'vesselseg[ray]'")

import segment_fakes  # noqa: E402
from run_checks import assert_same_outputs, copy_drive  # noqa: E402
from segment_fakes import NodeLog  # noqa: E402
from vesselcli.run import pipeline  # noqa: E402
from vesselcli.cli import main  # noqa: E402
from vesselcli.run.config import SegmentConfig  # noqa: E402
from vesselcli.engines import open_engine  # noqa: E402
from vesselcli.run import ray_data  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]


#: Eight DRIVE test images: one image per Ray block and batch, so eight tasks, and an actor
#: takes at most four at a time: both nodes' actors get some (Ray Data sends a task to an actor
#: on the node holding its block first, and the driver's node holds them all).
EIGHT = tuple(f"{i:02d}_test.tif" for i in (1, 2, 3, 4, 5, 6, 7, 8))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, drive_root: Path, model_file: Path) -> Path:
    """Eight DRIVE test images segmented by one local process; the folder holds ``in`` and ``one``."""
    base = tmp_path_factory.mktemp("cluster")
    src = copy_drive(drive_root, base / "in", EIGHT)
    result = CliRunner().invoke(main, ["segment", str(src), "-o", str(base / "one"), "--model", str(model_file), "-q"])
    assert result.exit_code == 0, result.output
    return base


@pytest.fixture()
def cluster() -> Iterator[object]:
    """A head node and one more node, 1 CPU each, on this machine; shut down after the test."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "the driver must join the cluster by its address, as --ray ADDRESS does"
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
        yield nodes
    finally:
        if ray.is_initialized():
            ray_data.shutdown(ray)
        nodes.shutdown()


@pytest.fixture()
def both_nodes_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """One image per block and per batch (see ``EIGHT``), and no batch starts until both actors
    are up (the head's starts sooner and would take the first four)."""
    import ray.data

    monkeypatch.setattr(ray_data, "IMAGES_PER_BLOCK", 1)
    monkeypatch.setattr(ray_data, "IMAGES_PER_ACTOR_CALL", 1)
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 60)


def segment_on(cluster, source: Path, out: Path, model_file: Path, hook: NodeLog):  # noqa: ANN001, ANN201
    """``ray_data.run`` of ``source`` into ``out`` on ``cluster`` (joined by address) with ``hook``: the
    driver of `--ray ADDRESS`, with the remover thread of the test beside it."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(segment_fakes)  # the actors cannot import the tests folder
    config = SegmentConfig(inputs=(source,), out=out)
    engine = open_engine(model_file, "auto", "cpu")  # the driver's: it describes the model
    try:
        return ray_data.run(config, pipeline.plan(config), engine,
                            ray_data.RayOptions(cluster.address, model=model_file, hook=hook), threading.Event())
    finally:
        engine.close()


def batches(log: Path) -> list[tuple[str, list[str]]]:
    """The hook's log: (node id, images) per batch, in the order they started."""
    return [(line.split()[0], line.split()[1:]) for line in log.read_text().splitlines()]


def test_two_nodes_equal_one_process(one_process: Path, model_file: Path, cluster, tmp_path: Path,  # noqa: ANN001
                                     both_nodes_busy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``vesselseg segment IN --ray ADDRESS`` itself (the hook added to the options it builds)."""
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(segment_fakes)
    log = tmp_path / "batches"
    monkeypatch.setattr(ray_data, "RayOptions", functools.partial(ray_data.RayOptions, hook=NodeLog(log)))
    result = CliRunner().invoke(main, ["segment", str(one_process / "in"), "-o", str(tmp_path / "out"), "--model",
                                       str(model_file), "--ray", cluster.address])
    assert result.exit_code == 0, result.output
    assert f"8 images, Ray ({cluster.address})" in result.output
    assert_same_outputs(one_process / "one", tmp_path / "out")
    nodes = {node.node_id for node in cluster.list_all_nodes()}
    assert len(nodes) == 2 and {node for node, _ in batches(log)} == nodes, "both nodes must segment"
    assert not ray.is_initialized()  # the run left the cluster it joined


def test_a_node_removed_mid_run_loses_nothing(one_process: Path, model_file: Path, cluster, tmp_path: Path,  # noqa: ANN001
                                              both_nodes_busy: None) -> None:
    worker = next(iter(cluster.worker_nodes))
    log = tmp_path / "batches"
    removed: list[float] = []

    def remove_when_busy() -> None:  # the second node's first batch stalls in its hook: remove the node then
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.exists() and any(node == worker.node_id for node, _ in batches(log)):
                cluster.remove_node(worker)
                removed.append(time.monotonic())
                return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_when_busy, daemon=True)
    remover.start()
    report = segment_on(cluster, one_process / "in", tmp_path / "out", model_file,
                        NodeLog(log, stall_on=worker.node_id, seconds=300))
    remover.join(timeout=5)
    assert removed, "the second node never got a batch"
    done = batches(log)
    stalled = {name for node, names in done if node == worker.node_id for name in names}
    redone = {name for node, names in done if node != worker.node_id for name in names}
    assert stalled and stalled <= redone, "the removed node's images must be redone on the head"
    assert [n.node_id for n in cluster.list_all_nodes()] == [cluster.head_node.node_id]
    assert (report.done, report.failed, report.exit_code) == (8, 0, 0)
    assert_same_outputs(one_process / "one", tmp_path / "out")
