"""The machine every figure was measured on, and its measured arithmetic peak.

``machine_info`` records what a reader needs to compare figures across machines (CPU model,
cores usable by this process, memory, OS, library versions, repository commit); every table in
BENCHMARKS.md is printed beside it. ``matmul_peak_gflops`` measures the float32 peak that a
well-tuned kernel reaches on this CPU (PyTorch's BLAS on a large square matmul): the
arithmetic limit no network can beat, against which the model's own time is compared.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from vesselcli.provenance import cpu_model

LIBRARIES = ("torch", "onnxruntime", "numpy", "opencv-python-headless", "pillow")


def usable_cores() -> int:
    """Cores this process may run on (affinity mask; ``os.cpu_count()`` where unsupported)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def library_versions() -> dict[str, str]:
    """Installed distribution versions (``"absent"`` when not installed)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_commit(repo: Path) -> str:
    """Short commit of the working tree, with ``+dirty`` when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_info(repo: Path) -> dict[str, object]:
    """Everything printed in the "Machine" section of BENCHMARKS.md."""
    mem = memory_gib()
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": round(mem, 1) if mem is not None else None,
        "os": f"{platform.system()} {platform.release()}",
        "commit": git_commit(repo),
        **library_versions(),
    }


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, threads: int | None = None) -> float:
    """Best float32 GFLOP/s of a ``size x size`` matmul over ``repeats`` (2 n^3 FLOPs each)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def onnxruntime_matmul_peaks(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s (float32) and GOP/s (int8) of a ``size x size`` matmul in ONNX Runtime.

    Both peaks are measured the same way: a one-node ONNX model (``MatMul`` on float32,
    ``MatMulInteger`` on uint8 x int8, the U8S8 form x86 VNNI runs) in an ONNX Runtime CPU
    session with every usable core, best of ``repeats`` after a warm-up; 2 n^3 operations each.
    These are the arithmetic limits the network's float32 and INT8 variants run against.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    cases = {
        "fp32": ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT,
                 rng.standard_normal((size, size)).astype(np.float32), rng.standard_normal((size, size)).astype(np.float32)),
        "int8": ("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32,
                 rng.integers(0, 255, (size, size), dtype=np.uint8), rng.integers(-127, 127, (size, size), dtype=np.int8)),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    options.log_severity_level = 3
    peaks = {}
    for name, (op, ta, tb, ty, a, b) in cases.items():
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["y"])], name,
            [helper.make_tensor_value_info("a", ta, [size, size]), helper.make_tensor_value_info("b", tb, [size, size])],
            [helper.make_tensor_value_info("y", ty, [size, size])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {"a": a, "b": b}
        session.run(None, feeds)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            best = min(best, time.perf_counter() - start)
        peaks[name] = 2.0 * size**3 / best / 1e9
    return peaks
