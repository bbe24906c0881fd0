"""Milliseconds per image of ``vesselseg segment`` for real photographs of three sizes, per scale rule.

    python -m bench.scale_rule --data ../shared/data --copies 5 --repeats 3
    python -m bench.scale_rule --source before=../main --source after=.   # two checkouts side by side
    python -m bench.scale_rule --rules calibre --variant plain= --variant tta=--tta   # two option sets

Sizes and sources (training images: only their pixels matter here): 565x584 DRIVE
``21_training.tif``, 999x960 CHASE_DB1 ``Image_01L.jpg``, 3504x2336 HRF ``01_h.jpg``. Each
runs as a fresh ``segment`` process (default options, overlays included unless
``--no-overlays``, plus ``-q --scale-rule RULE``) on 1 copy and on ``--copies`` copies:

- ``ms/image``: (wall of N - wall of 1) / (N - 1), so start-up and model loading are left out;
- ``latency``: the ``seconds`` cell of results.csv in the 1-copy run (one photograph from the
  start of its reading to its row, nothing queued before it);
- ``cpu``: (CPU seconds, user + system, of N - those of 1) / (N - 1): the work, which other
  programs on a shared machine do not inflate as much as they inflate wall time.

Medians of ``--repeats``; the runs of every source, rule and variant are interleaved within a
repeat, so a change of load touches them alike. ``--source NAME=DIR`` (repeatable) runs the
package found in DIR (its ``PYTHONPATH``), e.g. a checkout of the code before a change;
``--variant NAME=OPTIONS`` (repeatable) adds ``segment`` options, split at spaces, e.g.
``tta=--tta`` (``plain=`` for none).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from .measure import run_once

SOURCES = {
    "565x584": ("DRIVE/training/images/21_training.tif",),
    "999x960": ("CHASE_DB1/images/Image_01L.jpg",),
    "3504x2336": ("HRF/images/01_h.jpg",),
}
RULES = ("fov", "calibre")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(folder: Path, rule: str, code: Path, overlays: bool, out: Path, options: tuple[str, ...] = ()) -> tuple[float, float, list[float]]:
    """(wall s, CPU s, the seconds column) of one ``segment`` run of ``folder`` with the package
    in ``code`` and the extra ``options``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vesselcli", "segment", str(folder), "--out", str(out), "-q", "--scale-rule", rule, *options]
    if not overlays:
        command.append("--no-overlays")
    # Run from inside the checkout too: ``python -m`` puts the working directory before PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(code.resolve())}
    before = _children_cpu()
    wall = run_once(command, cwd=code.resolve(), env=env).wall_s
    cpu = _children_cpu() - before
    with open(out / "results.csv", newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return wall, cpu, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_rule", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--sizes", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--source", action="append", default=[], metavar="NAME=DIR",
                        help="a checkout whose vesselcli to run (repeatable); default: this one")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="segment options to time, split at spaces (repeatable), e.g. tta=--tta; default: none")
    parser.add_argument("--no-overlays", action="store_true", help="time segment --no-overlays")
    args = parser.parse_args(argv)
    if args.copies < 2:
        parser.error("--copies must be at least 2 (the per-image time is the difference from 1 copy)")
    sources = dict(s.split("=", 1) for s in args.source) if args.source else {"this": "."}
    variants = {name: tuple(words.split()) for name, words in (v.split("=", 1) for v in args.variant)} or {"": ()}
    if len(sources) > 1 and len(variants) > 1:
        parser.error("compare either sources or variants in one run, not both")
    load_before = os.getloadavg()[0]
    column = "variant" if len(variants) > 1 else "source"
    print(f"{'size':10s} {'rule':8s} {column:8s} {'ms/image':>9s} {'latency':>9s} {'cpu ms':>8s}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vesselseg-scale-") as tmp:
        scratch = Path(tmp)
        for size in args.sizes:
            path = args.data / SOURCES[size][0]
            one, many = scratch / f"{size}-1", scratch / f"{size}-{args.copies}"
            for folder, n in ((one, 1), (many, args.copies)):
                folder.mkdir()
                for i in range(n):
                    shutil.copyfile(path, folder / f"{i:03d}{path.suffix}")
            runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
            for _ in range(args.repeats):
                for rule in args.rules:
                    for (source, code), (variant, options) in itertools.product(sources.items(), variants.items()):
                        wall_1, cpu_1, seconds_1 = timed(one, rule, Path(code), not args.no_overlays, scratch / "out", options)
                        wall_n, cpu_n, _ = timed(many, rule, Path(code), not args.no_overlays, scratch / "out", options)
                        n = args.copies - 1
                        name = variant if column == "variant" else source
                        runs.setdefault((rule, name), []).append(((wall_n - wall_1) / n, seconds_1[0], (cpu_n - cpu_1) / n))
            for (rule, name), values in runs.items():
                per_image, latency, cpu = (1000 * statistics.median(v) for v in zip(*values))
                print(f"{size:10s} {rule:8s} {name:8s} {per_image:9.0f} {latency:9.0f} {cpu:8.0f}", flush=True)
    print(f"load average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
