"""Run one measured configuration in its own process and read its time and peak memory.

Each run is a fresh process, so runs never share caches, thread pools or heap: its wall time is
measured from the parent (process start to exit: interpreter start-up, imports and model loading
included, as a user would wait for it) and its peak memory is the kernel's high-water mark of
resident memory (``ru_maxrss`` from ``os.wait4``, which covers the process and the children it
waited for). A configuration is run ``repeats`` times; figures are the median wall time and the
largest peak memory.
"""
from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class RunFailed(RuntimeError):
    """A measured command exited non-zero; the message carries its command and stderr tail."""


@dataclass(frozen=True)
class Run:
    """One process: wall seconds, peak resident memory (MiB) and its JSON report (if any)."""

    wall_s: float
    peak_rss_mib: float
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """A configuration measured ``len(runs)`` times on ``images`` images."""

    subject: str
    condition: str
    images: int
    command: str
    runs: tuple[Run, ...]

    @property
    def wall_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(r.peak_rss_mib for r in self.runs)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.wall_s / self.images

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    @property
    def spread(self) -> tuple[float, float]:
        """(fastest, slowest) wall seconds over the runs."""
        walls = [r.wall_s for r in self.runs]
        return min(walls), max(walls)


# Linux's ru_maxrss of a child counts the memory of the process it was forked from (the
# high-water mark survives exec), so a large parent (pytest, or this benchmark after loading
# torch) would inflate every figure. A tiny wrapper interpreter forks the measured command
# instead and reports that grandchild's own peak.
_WRAPPER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_once(command: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``command`` to completion; its wall time, peak RSS and last stdout line as JSON."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, peak.name, *command], stdout=out, stderr=err, cwd=cwd, env=env)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        peak_kib = int(peak.read() or 0)
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RunFailed(f"`{shlex.join(command)}` exited with {proc.returncode}:\n{tail}")
    # ru_maxrss is in KiB on Linux.
    return Run(wall_s=wall, peak_rss_mib=peak_kib / 1024.0, report=_last_json(stdout))


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return {}
    return {}


def measure(
    subject: str,
    condition: str,
    images: int,
    command_for: Callable[[Path], list[str]],
    scratch: Path,
    repeats: int,
    cwd: Path | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
    shown: Callable[[Sequence[str]], str] = shlex.join,
) -> Measurement:
    """Run ``command_for(out_dir)`` ``repeats`` times, each into a fresh empty ``out_dir``.

    The measurement's command is ``shown(command_for(Path("OUT")))``: the form printed for readers.
    """
    runs = []
    out_dir = scratch / "out"
    for i in range(repeats):
        shutil.rmtree(out_dir, ignore_errors=True)
        command = command_for(out_dir)
        run = run_once(command, cwd=cwd)
        runs.append(run)
        log(f"  {subject:28s} {condition:34s} run {i + 1}/{repeats}: {run.wall_s:7.2f} s, {images / run.wall_s:7.2f} images/s, peak {run.peak_rss_mib:7.0f} MiB")
    shutil.rmtree(out_dir, ignore_errors=True)
    return Measurement(subject, condition, images, shown(command_for(Path("OUT"))), tuple(runs))
