"""Where ``segment --ray`` puts its engine actors (``ray_data.layout``, pure: no Ray needed)."""
from __future__ import annotations

from vesselcli.run.ray_data import Layout, layout


def test_a_cpu_only_cluster_gets_one_fused_one_thread_actor_per_cpu() -> None:
    assert layout({"CPU": 2.0}, [2.0], None, "auto") == Layout(2, 0.0, cpus=1, threads=1, fused=True)
    assert layout({"CPU": 48.0}, [16.0, 32.0], None, "auto") == Layout(48, 0.0, cpus=1, threads=1, fused=True)


def test_ray_actors_share_out_the_cpus_at_most_a_node_each() -> None:
    assert layout({"CPU": 2.0}, [2.0], 1, "auto") == Layout(1, 0.0, cpus=2, threads=2, fused=True)
    assert layout({"CPU": 48.0}, [16.0, 32.0], 12, "auto") == Layout(12, 0.0, cpus=4, threads=4, fused=True)
    assert layout({"CPU": 48.0}, [16.0, 32.0], 1, "auto") == Layout(1, 0.0, cpus=32, threads=32, fused=True)
    assert layout({"CPU": 2.0}, [2.0], 8, "auto") == Layout(8, 0.0, cpus=1, threads=1, fused=True)


def test_gpus_get_one_actor_each_with_cpu_tasks_beside_them() -> None:
    gpus = {"CPU": 32.0, "GPU": 4.0}
    assert layout(gpus, [16.0, 16.0], None, "auto") == Layout(4, 1.0, cpus=1, threads=None, fused=False)
    assert layout(gpus, [16.0, 16.0], 2, "cuda") == Layout(2, 1.0, cpus=1, threads=None, fused=False)
    # more actors than GPUs, or --device cpu: CPU actors, as on a cluster without GPUs
    assert layout(gpus, [16.0, 16.0], 8, "auto").fused and layout(gpus, [16.0, 16.0], 8, "auto").gpus == 0.0
    assert layout(gpus, [16.0, 16.0], None, "cpu") == Layout(32, 0.0, cpus=1, threads=1, fused=True)
