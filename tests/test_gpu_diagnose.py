"""``vesselseg info``'s GPU diagnosis: each missing piece is one line with its fix.

No GPU here, so every failure is faked at the boundary the diagnosis reads: the driver's
``/proc`` file, the installed distributions, the library folders; then the whole ``info``
command is run with those facts.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner

from vesselcli.cli.info import info
from vesselcli.engines import diagnose as dg
from vesselcli.engines.diagnose import Finding, GpuFacts, diagnose

CPU_ORT = (("onnxruntime", "1.32.0"),)
GPU_ORT = (("onnxruntime-gpu", "1.26.0"),)
ALL_LIBS = {name: "/site/nvidia/x/lib" for name in dg.needed_libraries(12)}


def healthy(**changes) -> GpuFacts:
    """A GPU machine with everything installed; ``changes`` break one thing."""
    facts = dict(driver="550.54.15", runtimes=GPU_ORT, ort_cuda="12.8", libraries=dict(ALL_LIBS),
                 tensorrt="10.13.0", torch=None)
    facts.update(changes)
    return GpuFacts(**facts)


def problems(facts: GpuFacts) -> list[Finding]:
    return [f for f in diagnose(facts) if f.level == "problem"]


def test_a_complete_gpu_setup_is_ok_with_nothing_to_fix() -> None:
    (only,) = diagnose(healthy())
    assert only.level == "ok" and "driver 550.54.15" in only.line() and "CUDA 12.8" in only.line()


def test_no_driver_says_the_cpu_is_used_and_how_to_get_the_gpu() -> None:
    (finding,) = diagnose(GpuFacts(driver=None, runtimes=CPU_ORT))
    assert finding.level == "note" and "no NVIDIA driver" in finding.problem
    assert "525.60.13" in finding.fix and "pip install 'vesselseg[gpu]'" in finding.fix


@pytest.mark.parametrize("driver, ort_cuda, needed", [("470.82.01", "12.8", "525.60.13"), ("525.60.12", "12.2", "525.60.13"),
                                                      ("570.86.10", "13.0", "580"), ("470.82.01", None, "525.60.13")])
def test_a_driver_older_than_the_cuda_libraries_need_is_a_problem(driver, ort_cuda, needed) -> None:
    runtimes = GPU_ORT if ort_cuda else CPU_ORT
    found = [f for f in problems(healthy(driver=driver, ort_cuda=ort_cuda, runtimes=runtimes)) if "too old" in f.problem]
    assert len(found) == 1 and driver in found[0].problem and f">= {needed}" in found[0].fix


@pytest.mark.parametrize("driver", ["525.60.13", "580.65.06", "unknown"])
def test_a_driver_new_enough_or_unreadable_is_not_called_too_old(driver) -> None:
    assert not [f for f in diagnose(healthy(driver=driver)) if "too old" in f.problem]


def test_the_cpu_build_of_onnxruntime_on_a_gpu_machine_says_to_swap_it() -> None:
    (finding,) = problems(healthy(runtimes=CPU_ORT, ort_cuda=None, libraries={}))
    assert "CPU build" in finding.problem and "no CUDA provider" in finding.problem
    assert finding.fix == "`pip uninstall -y onnxruntime` then `pip install 'vesselseg[gpu]'`"


def test_cudnn_not_found_names_the_wheel_that_brings_it() -> None:
    libraries = dict(ALL_LIBS, **{"libcudnn.so.9": None})
    (finding,) = problems(healthy(libraries=libraries))
    assert "cuDNN 9 not found" in finding.problem and "pip install 'nvidia-cudnn-cu12~=9.0'" in finding.fix


def test_cuda_libraries_not_found_name_their_wheels() -> None:
    libraries = dict(ALL_LIBS, **{"libcudart.so.12": None, "libcublasLt.so.12": None})
    (finding,) = problems(healthy(libraries=libraries))
    assert "libcudart.so.12" in finding.problem and "libcublasLt.so.12" in finding.problem
    assert "pip install nvidia-cuda-runtime-cu12 nvidia-cublas-cu12" in finding.fix


def test_tensorrt_absent_is_a_note_with_the_install_command() -> None:
    found = diagnose(healthy(tensorrt=None))
    note = next(f for f in found if "TensorRT" in f.problem)
    assert note.level == "note" and "pip install 'vesselseg[tensorrt]'" in note.fix and "make engine" in note.fix
    assert found[0].level == "ok"  # optional: the GPU setup itself is still complete


def test_both_runtimes_installed_is_a_conflict_with_the_way_out() -> None:
    facts = healthy(runtimes=(("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.26.0")))
    (finding,) = problems(facts)
    assert "both onnxruntime 1.32.0 and onnxruntime-gpu 1.26.0" in finding.problem
    assert finding.fix.startswith("`pip uninstall -y onnxruntime onnxruntime-gpu` then `pip install 'vesselseg[gpu]'`")


def test_no_runtime_at_all_says_which_extra_to_install() -> None:
    (finding, _) = diagnose(GpuFacts(driver=None, runtimes=()))
    assert finding.level == "problem" and "no ONNX Runtime" in finding.problem
    assert "pip install 'vesselseg[cpu]'" in finding.fix and "pip install 'vesselseg[gpu]'" in finding.fix


# ----------------------------------------------------------------- the facts, read from fakes


@pytest.mark.parametrize("text, expected", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n", "535.104.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder@U16)\n", "550.54.15"),
    ("NVRM version: something else entirely\n", "unknown"),
])
def test_driver_version_is_read_from_the_kernel_modules_file(tmp_path: Path, text, expected) -> None:
    proc = tmp_path / "version"
    proc.write_text(text)
    assert dg.driver_version(proc, tmp_path / "no-device") == expected


def test_no_driver_file_is_no_driver_unless_a_device_node_exists(tmp_path: Path) -> None:
    assert dg.driver_version(tmp_path / "missing", tmp_path / "nvidia0") is None
    (tmp_path / "nvidia0").touch()
    assert dg.driver_version(tmp_path / "missing", tmp_path / "nvidia0") == "unknown"


class FakeDist:
    def __init__(self, name: str, version: str, files: list[str]) -> None:
        self.metadata = {"Name": name}
        self.version = version
        self.files = [PurePosixPath(f) for f in files]


def test_every_distribution_that_provides_the_onnxruntime_module_is_found() -> None:
    dists = [FakeDist("onnxruntime", "1.32.0", ["onnxruntime/__init__.py"]),
             FakeDist("onnxruntime_gpu", "1.26.0", ["onnxruntime/__init__.py", "onnxruntime/capi/x.so"]),
             FakeDist("onnxruntime-genai", "0.9.0", ["onnxruntime_genai/__init__.py"]),
             FakeDist("numpy", "2.0", ["numpy/__init__.py"])]
    assert dg.onnxruntime_distributions(dists) == (("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.26.0"))


def test_the_cuda_build_is_read_from_build_and_package_info() -> None:
    assert dg.cuda_build_of("package_name = 'onnxruntime-gpu'\n__version__ = '1.26.0'\ncuda_version = '12.8'\n") == "12.8"
    assert dg.cuda_build_of("package_name = 'onnxruntime'\n__version__ = '1.32.0'\n") is None


def test_libraries_are_found_in_nvidia_wheels_and_the_library_path(tmp_path: Path) -> None:
    site, system = tmp_path / "site", tmp_path / "ld"
    (site / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    (site / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9").touch()
    system.mkdir()
    (system / "libcudart.so.12").touch()
    dirs = dg.library_dirs([str(site)], {"LD_LIBRARY_PATH": str(system)})
    assert dg.find_library("libcudnn.so.9", dirs) == str(site / "nvidia" / "cudnn" / "lib")
    assert dg.find_library("libcudart.so.12", dirs) == str(system)
    assert dg.find_library("libcublas.so.12", dirs[:2]) is None


# --------------------------------------------------------------------- the whole info command


@pytest.mark.parametrize("facts, expected", [
    (GpuFacts(driver=None, runtimes=CPU_ORT), "no NVIDIA driver found"),
    (healthy(driver="470.82.01"), "NVIDIA driver 470.82.01 is too old for the CUDA 12 libraries"),
    (healthy(runtimes=CPU_ORT, ort_cuda=None), "onnxruntime 1.32.0 is the CPU build"),
    (healthy(libraries=dict(ALL_LIBS, **{"libcudnn.so.9": None})), "cuDNN 9 not found"),
    (healthy(tensorrt=None), "TensorRT is not installed"),
    (healthy(runtimes=(("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.26.0"))), "both onnxruntime 1.32.0 and"),
])
def test_info_prints_each_diagnosis_as_one_line_with_its_fix(monkeypatch, facts, expected) -> None:
    monkeypatch.setattr(dg, "gather", lambda: facts)
    result = CliRunner().invoke(info, ["--device", "cpu"], terminal_width=400)
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if expected in line]
    assert "; fix: " in line


def test_no_driver_with_the_gpu_runtime_installed_asks_only_for_the_driver() -> None:
    (finding,) = diagnose(GpuFacts(driver=None, runtimes=GPU_ORT, ort_cuda="12.8", libraries=dict(ALL_LIBS)))
    assert "no NVIDIA driver" in finding.problem and finding.fix == "for an NVIDIA GPU, install its driver (>= 525.60.13)"
