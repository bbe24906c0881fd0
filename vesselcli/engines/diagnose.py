"""What stands between this machine and GPU inference, and the command that fixes it.

``gather()`` reads the facts without loading a CUDA library or importing a runtime: the driver
from ``/proc/driver/nvidia/version``, installed packages from their metadata, the CUDA build of
ONNX Runtime from its ``build_and_package_info.py``, and CUDA/cuDNN libraries by file name in
NVIDIA's wheels (``site-packages/nvidia/*/lib``) and the loader's usual folders.
``diagnose(facts)`` is a pure function of those facts: one ``Finding`` per thing missing, each
a one-line problem and its fix (``vesselseg info`` prints them).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable

#: Lowest Linux driver for each CUDA major version (NVIDIA's minor version compatibility table).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}
#: The CUDA major version the ``gpu`` extra installs (onnxruntime-gpu < 1.27).
GPU_EXTRA_CUDA = 12
CPU_INSTALL = "pip install 'vesselseg[cpu]'"
GPU_INSTALL = "pip install 'vesselseg[gpu]'"
PROC_VERSION = Path("/proc/driver/nvidia/version")
SYSTEM_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/cuda/lib64",
                       "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/lib")


@dataclass(frozen=True)
class GpuFacts:
    """What ``gather`` found.

    ``driver``: the NVIDIA driver version ("550.54.15"), "unknown" when a device node exists but
    no version is readable, None when no driver is loaded. ``runtimes``: (distribution, version)
    of every installed package that provides the ``onnxruntime`` module. ``ort_cuda``: the CUDA
    version ONNX Runtime was built with ("12.8"), None for a CPU build. ``libraries``: soname ->
    folder where it was found (None: not found). ``tensorrt``/``torch``: installed versions.
    """

    driver: str | None
    runtimes: tuple[tuple[str, str], ...] = ()
    ort_cuda: str | None = None
    libraries: dict[str, str | None] = field(default_factory=dict)
    tensorrt: str | None = None
    torch: str | None = None


@dataclass(frozen=True)
class Finding:
    """``level``: 'ok' (nothing to do), 'note' (optional) or 'problem'; ``fix`` is the command."""

    level: str
    problem: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.problem}; fix: {self.fix}" if self.fix else self.problem


# ---------------------------------------------------------------------------------- the rules


def cuda_major(facts: GpuFacts) -> int:
    """CUDA major version the GPU runtime needs: its build's, else what the ``gpu`` extra brings."""
    if facts.ort_cuda and facts.ort_cuda.split(".")[0].isdigit():
        return int(facts.ort_cuda.split(".")[0])
    return GPU_EXTRA_CUDA


def needed_libraries(major: int) -> dict[str, str]:
    """soname -> the wheel that provides it, for ONNX Runtime's CUDA provider of ``major``."""
    suffix = f"-cu{major}" if major < 13 else ""
    return {
        f"libcudart.so.{major}": f"nvidia-cuda-runtime{suffix}",
        f"libcublas.so.{major}": f"nvidia-cublas{suffix}",
        f"libcublasLt.so.{major}": f"nvidia-cublas{suffix}",
        "libcudnn.so.9": f"nvidia-cudnn-cu{major}",
    }


def parse_version(text: str) -> tuple[int, ...] | None:
    """'525.60.13' -> (525, 60, 13); None when it is not a dotted number."""
    parts = text.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def diagnose(facts: GpuFacts) -> list[Finding]:
    """Every finding, most fundamental first; a machine with nothing missing gets one 'ok'."""
    found = _runtime_findings(facts)
    if facts.driver is None:
        then = "" if facts.ort_cuda else f", then `{GPU_INSTALL}`"
        found.append(Finding("note", "no NVIDIA driver found (no /proc/driver/nvidia/version): vesselseg runs on the CPU",
                             f"for an NVIDIA GPU, install its driver (>= {MIN_DRIVER[cuda_major(facts)]}){then}"))
        return found
    major = cuda_major(facts)
    driver, needed = parse_version(facts.driver), parse_version(MIN_DRIVER.get(major, "0"))
    if driver is not None and needed is not None and driver < needed:
        found.append(Finding("problem", f"NVIDIA driver {facts.driver} is too old for the CUDA {major} libraries "
                                        f"(they need >= {MIN_DRIVER[major]})",
                             f"update the NVIDIA driver to >= {MIN_DRIVER[major]} "
                             "(e.g. your distribution's nvidia-driver-550 package), then rerun `vesselseg info`"))
    gpu_runtime = [name for name, _ in facts.runtimes if name != "onnxruntime"]
    if facts.runtimes and facts.ort_cuda is None and not gpu_runtime:
        name, version = facts.runtimes[0]
        found.append(Finding("problem", f"{name} {version} is the CPU build: it has no CUDA provider, so ONNX Runtime "
                                        "cannot use the GPU",
                             f"`pip uninstall -y {name}` then `{GPU_INSTALL}`"))
    if facts.ort_cuda is not None:
        found.extend(_library_findings(facts, major))
    if facts.tensorrt is None:
        found.append(Finding("note", "TensorRT is not installed (optional: the fastest engine on NVIDIA GPUs)",
                             "`pip install 'vesselseg[tensorrt]'` then `make engine` builds a plan for this GPU"))
    if not any(f.level == "problem" for f in found) and facts.ort_cuda is not None:
        found.insert(0, Finding("ok", f"ONNX Runtime can use the GPU: driver {facts.driver}, "
                                      f"{' '.join(facts.runtimes[0])} built for CUDA {facts.ort_cuda}, CUDA and cuDNN libraries found"))
    return found


def _runtime_findings(facts: GpuFacts) -> list[Finding]:
    if not facts.runtimes:
        return [Finding("problem", "no ONNX Runtime is installed, so no model can run",
                        f"`{CPU_INSTALL}`, or `{GPU_INSTALL}` on a machine with an NVIDIA GPU")]
    if len(facts.runtimes) > 1:
        names = " and ".join(f"{n} {v}" for n, v in facts.runtimes)
        every = " ".join(n for n, _ in facts.runtimes)
        return [Finding("problem", f"both {names} are installed: they provide the same `onnxruntime` module and "
                                   "overwrite each other's files",
                        f"`pip uninstall -y {every}` then `{GPU_INSTALL}` (or `{CPU_INSTALL}` without an NVIDIA GPU)")]
    return []


def _library_findings(facts: GpuFacts, major: int) -> list[Finding]:
    missing: dict[str, list[str]] = {}
    for soname, wheel in needed_libraries(major).items():
        if not facts.libraries.get(soname):
            missing.setdefault(wheel, []).append(soname)
    found = []
    cudnn = f"nvidia-cudnn-cu{major}"
    if cudnn in missing:
        found.append(Finding("problem", f"cuDNN 9 not found (libcudnn.so.9 is in neither the {cudnn} wheel nor the "
                                        "library path): ONNX Runtime's CUDA provider cannot load",
                             f"`pip install '{cudnn}~=9.0'` (part of `{GPU_INSTALL}`)"))
    cuda = [w for w in missing if w != cudnn]
    if cuda:
        names = ", ".join(s for w in cuda for s in missing[w])
        found.append(Finding("problem", f"CUDA {major} libraries not found ({names}): ONNX Runtime's CUDA provider "
                                        "cannot load",
                             f"`pip install {' '.join(cuda)}` (part of `{GPU_INSTALL}`)"))
    return found


# --------------------------------------------------------------------------- reading the facts


def gather() -> GpuFacts:
    """The facts of this machine and this Python environment (see the module docstring)."""
    runtimes = onnxruntime_distributions(metadata.distributions())
    ort_cuda = next((v for v in (onnxruntime_cuda_build(name) for name, _ in runtimes) if v), None)
    major = cuda_major(GpuFacts(None, ort_cuda=ort_cuda))
    dirs = library_dirs()
    return GpuFacts(
        driver=driver_version(),
        runtimes=runtimes,
        ort_cuda=ort_cuda,
        libraries={soname: find_library(soname, dirs) for soname in needed_libraries(major)},
        tensorrt=installed_version(("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
        torch=installed_version(("torch",)),
    )


def driver_version(proc: Path = PROC_VERSION, device: Path = Path("/dev/nvidia0")) -> str | None:
    """'550.54.15' from the kernel module's version file; 'unknown' with only a device node; else None."""
    try:
        text = proc.read_text(errors="replace")
    except OSError:
        return "unknown" if device.exists() else None
    match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return match.group(1) if match else "unknown"


def onnxruntime_distributions(dists: Iterable[metadata.Distribution]) -> tuple[tuple[str, str], ...]:
    """(name, version) of the installed distributions whose files include the ``onnxruntime`` package."""
    found: dict[str, str] = {}
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if not (name == "onnxruntime" or name.startswith(("onnxruntime-", "ort-"))) or name in found:
            continue
        if any(file.parts[:1] == ("onnxruntime",) for file in dist.files or ()):
            found[name] = dist.version
    return tuple(sorted(found.items()))


def onnxruntime_cuda_build(distribution: str) -> str | None:
    """The ``cuda_version`` an installed ONNX Runtime wheel records, read as text (no import)."""
    try:
        files = metadata.distribution(distribution).files or ()
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "build_and_package_info.py" and file.parts[:1] == ("onnxruntime",):
            try:
                return cuda_build_of(Path(str(file.locate())).read_text(errors="replace"))
            except OSError:
                return None
    return None


def cuda_build_of(text: str) -> str | None:
    """``cuda_version = '12.8'`` in a ``build_and_package_info.py`` -> '12.8' (None: CPU build)."""
    match = re.search(r"""^cuda_version\s*=\s*['"]([0-9.]+)['"]""", text, re.MULTILINE)
    return match.group(1) if match else None


def library_dirs(paths: Iterable[str] | None = None, environ: dict[str, str] | None = None) -> list[Path]:
    """Where the CUDA provider's libraries can come from: NVIDIA's wheels (one ``lib`` folder per
    component, or ``nvidia/cu13/lib`` from CUDA 13 on), ``LD_LIBRARY_PATH``, the system folders."""
    environ = os.environ if environ is None else environ
    dirs: list[Path] = []
    for entry in sys.path if paths is None else paths:
        nvidia = Path(entry or ".") / "nvidia"
        if nvidia.is_dir():
            dirs.extend(sorted(p for p in nvidia.glob("*/lib") if p.is_dir()))
    dirs.extend(Path(d) for d in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d)
    dirs.extend(Path(d) for d in SYSTEM_LIBRARY_DIRS)
    return dirs


def find_library(soname: str, dirs: Iterable[Path]) -> str | None:
    """The first folder holding ``soname`` (a file or a link to one), or None."""
    for folder in dirs:
        if (folder / soname).exists():
            return str(folder)
    return None


def installed_version(distributions: tuple[str, ...]) -> str | None:
    """Version of the first installed distribution, found without importing it."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
