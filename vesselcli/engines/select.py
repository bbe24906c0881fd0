"""Open the right engine for a model file: ``open_engine`` and, for ``vesselseg info``,
``choose_engine`` which also says what was tried and why.

``--engine auto`` order (issue 5): a TensorRT engine built from this ONNX model for this GPU
and TensorRT version, else ONNX Runtime with the CUDA provider, else PyTorch on CUDA (needs a
checkpoint: the shipped ``default.pt`` for the default model), else ONNX Runtime on the CPU
(with the variant ``--precision`` picks: ``vesselcli.variants.record.choose``).
A ``.pt`` checkpoint runs with PyTorch (CUDA, else CPU); a ``.plan`` engine with TensorRT,
falling back to the ONNX model it was built from when it does not fit this machine.

Backends are imported only when tried, and GPU backends only when an NVIDIA driver is
present, so a CPU machine never imports torch or tensorrt. A GPU backend that is present but
fails to start (its session cannot be created, CUDA runs out of memory, its first batch fails)
is a ``failed`` attempt with the reason, and ``auto`` goes on to the next backend; the CLI
prints ``Selection.fallbacks()`` on stderr.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .base import Engine
from .errors import EngineUnavailable, ModelError

ENGINES = ("auto", "onnxruntime", "tensorrt", "torch")
ONNX_SUFFIXES = (".onnx",)
PLAN_SUFFIXES = (".plan", ".engine")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def shipped_model(suffix: str = ".onnx") -> Path:
    """Path of the model shipped inside the package (``vesselcli/models/default<suffix>``)."""
    return Path(str(resources.files("vesselcli").joinpath("models", "default" + suffix)))


def engine_dirs(model: Path) -> list[Path]:
    """Where TensorRT engines for an ONNX model are looked for: its own folder, then ./engines."""
    dirs = [model.parent, Path.cwd() / "engines"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in {e.resolve() for e in dirs[:i]}]


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is loaded (cheap: no CUDA library is touched, nothing is imported)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def model_kind(path: Path) -> str:
    """'onnx' | 'tensorrt' | 'torch' from the file suffix; ``ModelError`` otherwise."""
    suffix = path.suffix.lower()
    for kind, suffixes in (("onnx", ONNX_SUFFIXES), ("tensorrt", PLAN_SUFFIXES), ("torch", CHECKPOINT_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise ModelError(
        f"cannot tell what kind of model {path} is from its suffix {suffix!r}; expected .onnx (ONNX), "
        ".plan/.engine (TensorRT) or .pt/.pth (training checkpoint)"
    )


@dataclass(frozen=True)
class Attempt:
    """One backend considered by ``choose_engine``: ``outcome`` is 'chosen', 'failed' or 'skipped'."""

    engine: str
    device: str
    model: str
    outcome: str
    reason: str


@dataclass
class Selection:
    engine: Engine
    attempts: list[Attempt] = field(default_factory=list)

    def explain(self) -> str:
        """One line per backend considered, in order, with why it was or was not taken."""
        return "\n".join(f"{a.outcome:8} {a.engine:12} {a.device:7} {a.reason}" for a in self.attempts)

    def fallbacks(self) -> list[str]:
        """One line per backend that was tried and failed before the one chosen (for stderr)."""
        chosen = f"{self.engine.name} on {self.engine.device}"
        return [f"{a.engine} on {a.device} failed to start, using {chosen} instead: {a.reason}"
                for a in self.attempts if a.outcome == "failed"]


@dataclass(frozen=True)
class _Candidate:
    engine: str
    device: str
    path: Path
    why: str


def _resolve(model: Path | str | None) -> tuple[Path, Path | None]:
    """(model path, companion checkpoint for PyTorch or None)."""
    if model is None:
        path = shipped_model(".onnx")
        if not path.is_file():
            raise ModelError(f"the shipped model {path} is missing; reinstall vesselseg or run `make engine`")
        checkpoint = shipped_model(".pt")
        return path, checkpoint if checkpoint.is_file() else None
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; pass an .onnx file, a .plan engine or a .pt checkpoint")
    return path, None


def _candidates(path: Path, checkpoint: Path | None, device: str, precision: str = "auto") -> list[_Candidate | Attempt]:
    """Backends in the order ``auto`` tries them; an ``Attempt`` marks one that cannot apply."""
    kind = model_kind(path)
    if precision == "int8":
        return _int8_candidates(path, kind, device)
    gpu = device.startswith("cuda") or (device == "auto" and nvidia_gpu_present())
    cuda = device if device.startswith("cuda") else "cuda:0"
    out: list[_Candidate | Attempt] = []
    if kind == "tensorrt":
        out.append(_Candidate("tensorrt", cuda, path, "TensorRT engine given"))
        source = _plan_source(path)
        if source is None:
            return out
        path, kind = source, "onnx"
    if kind == "torch":
        if gpu:
            out.append(_Candidate("torch", cuda, path, "checkpoint on the GPU"))
        if not device.startswith("cuda"):
            out.append(_Candidate("torch", "cpu", path, "checkpoint on the CPU"))
        return out
    if not gpu:
        if not out:
            out.append(Attempt("tensorrt", "cuda", str(path), "skipped", "no NVIDIA GPU driver found"))
    elif not out:
        plans = _matching_plans(path)
        out.extend(_Candidate("tensorrt", cuda, plan, f"built from {path.name} for this GPU") for plan in plans)
        if not plans:
            where = ", ".join(str(d) for d in engine_dirs(path)) or "nowhere"
            out.append(Attempt("tensorrt", cuda, str(path), "skipped", f"no TensorRT engine built from {path.name} in {where} (`make engine` builds one)"))
    if gpu:
        out.append(_Candidate("onnxruntime", cuda, path, "CUDA execution provider"))
        if checkpoint is not None:
            out.append(_Candidate("torch", cuda, checkpoint, "shipped checkpoint on the GPU"))
        else:
            out.append(Attempt("torch", cuda, str(path), "skipped", "needs a .pt checkpoint (given an ONNX model)"))
    if not device.startswith("cuda"):
        out.append(_cpu_candidate(path, precision))
    return out


def _cpu_candidate(path: Path, precision: str) -> _Candidate:
    """ONNX Runtime on the CPU with the variant ``--precision`` picks (``vesselcli.variants``)."""
    from ..variants.record import choose

    choice = choose(path, "fp32" if precision in ("fp16", "bf16") else precision)
    return _Candidate("onnxruntime", "cpu", choice.path, f"CPU, {_cores()} cores, full graph optimisation (segment runs two calls at once on half the cores each); {choice.why}")


def _int8_candidates(path: Path, kind: str, device: str) -> list[_Candidate | Attempt]:
    """``--precision int8``: the gated INT8 variant of an ONNX model, on the CPU only."""
    if kind != "onnx":
        raise ModelError(f"--precision int8 needs an .onnx model with its gated INT8 variant, got {path}; "
                         "use the shipped model or `vesselseg export` your checkpoint")
    if device.startswith("cuda"):
        raise ModelError(f"--precision int8 runs on the CPU (ONNX Runtime with VNNI), not on {device}; "
                         "use --device cpu or --precision fp32")
    return [_cpu_candidate(path, "int8")]


def _cores() -> int:
    from .onnxruntime import cpu_threads  # this module imports onnxruntime only when a session opens

    return cpu_threads()


def _plan_source(plan: Path) -> Path | None:
    from .tensorrt import plan_source

    return plan_source(plan)


def _matching_plans(onnx: Path) -> list[Path]:
    from .tensorrt import find_plans

    return find_plans(onnx, engine_dirs(onnx))


def _open(candidate: _Candidate, precision: str, threads: int | None, parallel_calls: int = 1) -> Engine:
    if candidate.engine == "onnxruntime":
        from .onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(candidate.path, candidate.device, threads, parallel_calls)
    if candidate.engine == "torch":
        from .torch import TorchEngine

        return TorchEngine(candidate.path, candidate.device, "fp32" if precision == "auto" else precision, threads)
    from .tensorrt import TensorRTEngine

    return TensorRTEngine(candidate.path, candidate.device)


def choose_engine(
    model: Path | str | None = None,
    engine: str = "auto",
    device: str = "auto",
    *,
    precision: str = "auto",
    threads: int | None = None,
    parallel_calls: int = 1,
) -> Selection:
    """Open the first backend that works for ``model`` (None: the shipped default) and say why.

    ``engine``: 'auto' or one backend (then no fallback to others); ``device``: 'auto', 'cpu',
    'cuda' or 'cuda:N'; ``precision``: 'auto' (the fastest variant that passed its gate, see
    ``vesselcli.variants``), 'fp32', 'int8' (ONNX Runtime on the CPU), or for PyTorch on CUDA
    'fp16' / 'bf16'. Raises ``ModelError`` for a missing or unreadable model or a backend
    that cannot run it, ``EngineUnavailable`` when no backend can run here.
    ``parallel_calls``: how many ``infer`` calls the caller will run at once; ONNX Runtime on
    the CPU splits the cores between them (its ``parallel_calls`` attribute says how many it
    was set up for); other backends ignore it and run one.
    """
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ModelError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
    if engine == "torch" and model is None:
        model = shipped_model(".pt")
    path, checkpoint = _resolve(model)
    plan = [c for c in _candidates(path, checkpoint, device, precision) if engine in ("auto", c.engine)]
    if not plan:
        raise ModelError(_mismatch_message(engine, path, device))
    attempts: list[Attempt] = []
    for candidate in plan:
        if isinstance(candidate, Attempt):
            attempts.append(candidate)
            continue
        opened, reason = _start(candidate, precision, threads, parallel_calls)
        if opened is not None:
            attempts.append(Attempt(candidate.engine, candidate.device, str(candidate.path), "chosen", candidate.why))
            return Selection(opened, attempts)
        attempts.append(Attempt(candidate.engine, candidate.device, str(candidate.path), "failed", reason))
    lines = "; ".join(f"{a.engine} on {a.device}: {a.reason}" for a in attempts) or "nothing applies"
    raise EngineUnavailable(f"no engine can run {path} here ({lines})")


def _start(candidate: _Candidate, precision: str, threads: int | None,
           parallel_calls: int = 1) -> tuple[Engine | None, str]:
    """(the opened engine, '') or (None, why it cannot run here). A model that is bad on every
    backend raises ``ModelError``; on a GPU anything else (CUDA errors, out of memory) is a reason."""
    on_gpu = candidate.device.startswith("cuda")
    try:
        opened = _open(candidate, precision, threads, parallel_calls)
    except ImportError as exc:
        return None, f"{candidate.engine} is not installed ({exc.name or exc}){_INSTALL_HINTS.get(candidate.engine, '')}"
    except EngineUnavailable as exc:
        return None, str(exc)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch, onnxruntime and CUDA each raise their own kinds
        if not on_gpu:
            raise
        return None, f"could not start on {candidate.device}: {_describe(exc)}"
    if not on_gpu:
        return opened, ""
    try:
        _probe(opened)
    except Exception as exc:  # noqa: BLE001 - as above: a GPU that fails its first batch is not used
        opened.close()
        return None, f"started, but its first batch on {candidate.device} failed: {_describe(exc)}"
    return opened, ""


#: What to install when a backend's module is missing.
_INSTALL_HINTS = {
    "onnxruntime": "; `pip install 'vesselseg[cpu]'`, or `pip install 'vesselseg[gpu]'` with an NVIDIA GPU",
    "torch": "; `pip install 'vesselseg[train]'`",
    "tensorrt": "; `pip install 'vesselseg[tensorrt]'`",
}


def _probe(engine: Engine) -> None:
    """One small batch of zeros: CUDA kernels, cuDNN and device memory are only really tried on
    the first run, so a GPU that cannot run the model fails here rather than mid-way."""
    multiple = engine.info.tile_multiple
    height, width = engine.info.fixed_tile or (8 * multiple, 8 * multiple)
    channels = int(engine.info.model_args.get("in_channels", 1))
    engine.infer(np.zeros((1, channels, height, width), np.float32))


def _describe(exc: BaseException) -> str:
    """``Class: the message`` on one line (at most 300 characters), with a hint for out of memory."""
    text = " ".join(str(exc).split())[:300] or "no message"
    hint = "; free GPU memory or run with --device cpu" if "out of memory" in text.lower() else ""
    return f"{exc.__class__.__name__}: {text}{hint}"


def open_engine(
    model: Path | str | None = None,
    engine: str = "auto",
    device: str = "auto",
    *,
    precision: str = "auto",
    threads: int | None = None,
    parallel_calls: int = 1,
) -> Engine:
    """The engine ``choose_engine`` picks; see there."""
    return choose_engine(model, engine, device, precision=precision, threads=threads,
                         parallel_calls=parallel_calls).engine


def _mismatch_message(engine: str, path: Path, device: str) -> str:
    kind = model_kind(path)
    if engine == "onnxruntime" and kind == "torch":
        return f"--engine onnxruntime needs an .onnx model, got the checkpoint {path}; make one with `vesselseg export {path}`"
    if engine == "torch" and kind != "torch":
        return f"--engine torch needs a .pt training checkpoint, got {path}"
    if engine == "tensorrt" and kind == "torch":
        return f"--engine tensorrt needs a .plan engine or an .onnx model, got the checkpoint {path}; build one with `vesselseg export {path}`"
    return f"--engine {engine} cannot run {path} on device {device}"
