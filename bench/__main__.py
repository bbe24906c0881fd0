"""``python -m bench``: accuracy and speed of vesselseg beside the report and the machine's limits.

    make bench                                   # = python -m bench --data ../shared/data
    python -m bench --data ../shared/data --counts 20,200         # leave out the 2,000-image run
    python -m bench --data ../shared/data --quick                 # a few images, one run (a smoke test)

Writes BENCHMARKS.md (repository root), bench/results.csv and bench/benchmarks.png. Every
measured configuration runs in its own process (see ``bench.measure``); the sections are:
accuracy (``bench.accuracy``), speed on the same DRIVE images (the report's path
``bench.report_path``, our pipeline per engine, the I/O floor ``bench.io_floor``), model
cost (``bench.cost``), and scaling with the number and the size of images
(``bench.workloads``), and what the analysis adds (``bench.analysis``: morphology per image, the
HTML report of 100,000 rows and of a 2,000-image run). The full run took 17 minutes on a quiet
2-core machine before the report's path was corrected and INT8 added (estimated at about 14
now, plus the analysis section), 7 of them the 2,000-image run.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import sys
from pathlib import Path

from .accuracy import product_accuracy, second_observer
from .chart import Bar, draw_chart
from .commands import Shown, relative_to_repo
from .machine import machine_info
from .measure import Measurement, RunFailed, measure, run_once
from .report import DEFAULT_ENGINE, FLOOR_SUBJECT, OURS_PREFIX, REPORT_SUBJECT, Results, render, write_csv
from .scaleout import measure_scaleout
from .workloads import FRAME_SIZES, count_set, drive_images, size_set

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("accuracy", "speed", "stages", "cost", "counts", "sizes", "analysis", "scaleout")
PY = sys.executable


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 20,200, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive image counts, got {text!r}")
    return values


def _sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sizes as WIDTHxHEIGHT[,WIDTHxHEIGHT...] such as 565x584,3504x2336, got {item!r}") from None
        if w < 16 or h < 16:
            raise argparse.ArgumentTypeError(f"image sizes must be at least 16x16, got {item!r}")
        sizes.append((w, h))
    return sizes


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="Write BENCHMARKS.md: accuracy and speed on this machine.")
    p.add_argument("--data", type=Path, required=True, help="folder holding DRIVE, CHASE_DB1 and DRIVE-512")
    p.add_argument("--model", type=Path, default=None, help="ONNX model for the onnxruntime engine (default: the shipped one)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint for the torch engine (default: the shipped one)")
    p.add_argument("--engines", default=None, help="comma-separated engines to time (default: every one available here)")
    p.add_argument("--images", type=int, default=20, help="DRIVE test images for the speed table (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="runs per speed configuration (default 3; medians reported)")
    p.add_argument("--counts", type=_ints, default=[20, 200, 2000], help="image counts for count scaling (default 20,200,2000)")
    p.add_argument("--sizes", type=_sizes, default=list(FRAME_SIZES), help="WIDTHxHEIGHT list for size scaling (default 565x584,999x960,1752x1168,3504x2336)")
    p.add_argument("--size-images", type=int, default=20, help="images per size (default 20)")
    p.add_argument("--scaling-repeats", type=int, default=1, help="runs per scaling configuration (default 1)")
    p.add_argument("--scaleout-repeats", type=int, default=3,
                   help="runs of each scale-out path, alternating (default 3; medians reported)")
    p.add_argument("--scaleout-images", type=int, default=200, help="DRIVE images through one process and --ray local (default 200)")
    p.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/vesselseg-bench"), help="work folder for image sets and outputs")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown report (default BENCHMARKS.md)")
    p.add_argument("--csv", type=Path, default=REPO / "bench" / "results.csv", help="tidy CSV of every figure (default bench/results.csv)")
    p.add_argument("--chart", type=Path, default=REPO / "bench" / "benchmarks.png", help="PNG chart (default bench/benchmarks.png)")
    p.add_argument("--quick", action="store_true", help="1 image per set, 1 run, the largest size only, no scale-out (Ray's start-up alone takes longer): proves the command works in under a minute")
    args = p.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = args.skip - set(SECTIONS)
    if unknown:
        p.error(f"--skip takes {', '.join(SECTIONS)}; got {', '.join(sorted(unknown))}")
    if args.quick:
        args.images, args.repeats, args.scaling_repeats, args.size_images = 1, 1, 1, 1
        args.counts = [1, 2]
        args.sizes = args.sizes[-1:]
        args.skip.add("scaleout")
    for name in ("images", "repeats", "size_images", "scaling_repeats", "scaleout_repeats", "scaleout_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: What is timed per engine: ONNX Runtime as ``segment`` runs by default (``--precision auto``,
#: the fastest variant that passed its gate) and in float32; PyTorch in float32.
ENGINE_RUNS = {"onnxruntime": [DEFAULT_ENGINE, "onnxruntime --precision fp32"], "torch": ["torch"]}


def available_engines(args: argparse.Namespace) -> list[str]:
    """Engine runs (``ENGINE_RUNS`` entries) that can be timed on this machine's CPU, the default first."""
    from vesselcli.engines import shipped_model

    wanted = args.engines.split(",") if args.engines else ["onnxruntime", "torch"]
    found = []
    for name in wanted:
        model = (args.model or shipped_model(".onnx")) if name == "onnxruntime" else (args.checkpoint or shipped_model(".pt"))
        if importlib.util.find_spec(name) is None:
            log(f"engine {name}: not installed, not timed")
        elif not Path(model).is_file():
            log(f"engine {name}: model {model} missing, not timed")
        else:
            found += ENGINE_RUNS.get(name, [name])
    if not found:
        raise SystemExit("no engine can be timed: the shipped model is missing (run `make engine`) or pass --model / --checkpoint")
    return found


def segment_command(args: argparse.Namespace, engine: str, images: Path, out: Path) -> list[str]:
    """The ``segment`` command of one engine run, e.g. ``onnxruntime --precision auto``."""
    command = [PY, "-m", "vesselcli", "segment", str(images), "--out", str(out), "-q", "--engine", *engine.split()]
    model = args.model if engine.startswith("onnxruntime") else args.checkpoint
    return command + (["--model", str(model)] if model is not None else [])


def ours(engine: str) -> str:
    return OURS_PREFIX + engine


def speed(args, engines, folder: Path, images: int, repeats: int, condition: str, with_report: bool, shown: Shown) -> list[Measurement]:
    scratch = args.scratch
    runs = [measure(FLOOR_SUBJECT, condition, images, lambda o: [PY, "-m", "bench.io_floor", str(folder), str(o)], scratch, repeats, cwd=REPO, shown=shown.command)]
    for engine in engines:
        runs.append(measure(ours(engine), condition, images, lambda o, e=engine: segment_command(args, e, folder, o), scratch, repeats, cwd=REPO, shown=shown.command))
    if with_report:
        runs.append(measure(REPORT_SUBJECT, condition, images, lambda o: [PY, "-m", "bench.report_path", str(folder), str(o)], scratch, repeats, cwd=REPO, shown=shown.command))
    return sorted(runs, key=_table_order)


def _table_order(m: Measurement) -> tuple[int, str]:
    """Report's path first, then ours, then the I/O floor."""
    return ({REPORT_SUBJECT: 0, FLOOR_SUBJECT: 2}.get(m.subject, 1), m.subject)


def run(args: argparse.Namespace, command: str) -> Results:
    machine = machine_info(REPO)
    results = Results(command=command, machine=machine, quick=args.quick)
    load = os.getloadavg()[0]
    if load > 0.5:
        results.notes.append(f"Load average was {load:.2f} when the run started: other work was using the CPU, so times may be pessimistic.")
    engines = available_engines(args)
    sources = drive_images(args.data)
    args.scratch.mkdir(parents=True, exist_ok=True)
    shown = Shown(REPO, relative_to_repo(args.data, REPO))
    limit = 1 if args.quick else None
    if "accuracy" not in args.skip:
        log("accuracy: vesselseg segment --gt on the public test sets")
        results.accuracy, results.accuracy_commands, results.accuracy_options = product_accuracy(args.data, args.scratch, args.model, limit, REPO, shown)
        results.observer = second_observer(args.data, limit)
    if "speed" not in args.skip:
        log(f"speed: {args.images} DRIVE images, {args.repeats} runs each")
        folder = count_set(sources, args.images, args.scratch)
        if args.images == len(sources):  # links to the dataset's files, in its order: print the dataset's folder
            shown = shown.with_alias(folder, str(shown.data / "DRIVE" / "test" / "images"))
        results.speed = speed(args, engines, folder, args.images, args.repeats, f"{args.images} DRIVE test images", True, shown)
    if "stages" not in args.skip:
        log("stages: each stage of segment timed on its own")
        images = [str(sources[0].parent)] if args.images == len(sources) else [str(p) for p in sources[: args.images]]
        stage_cmd = [PY, "-m", "bench.stages", *images, "--gt", str(sources[0].parents[1] / "1st_manual")]
        stage_cmd += ["--model", str(args.model)] if args.model else []
        stage_cmd += ["--repeats", "1" if args.quick else "3"]
        results.stages = run_once(stage_cmd, cwd=REPO).report
        results.stages_command = shown.command(stage_cmd)
    if "cost" not in args.skip:
        log("cost: FLOPs, measured peaks, engine time")
        cost_cmd = [PY, "-m", "bench.cost", "--image", str(sources[0])]
        cost_cmd += ["--model", str(args.model)] if args.model else ["--model", str(_shipped(".onnx"))]
        checkpoint = args.checkpoint or _shipped(".pt")
        if "torch" in engines and Path(checkpoint).is_file():
            cost_cmd += ["--checkpoint", str(checkpoint)]
        if args.quick:
            cost_cmd += ["--repeats", "2", "--matmul", "1024"]
        else:
            cost_cmd += ["--matmul", "4096"]
        results.cost = run_once(cost_cmd, cwd=REPO).report
        results.cost_command = shown.command(cost_cmd)
    if "counts" not in args.skip:
        log(f"scaling with the number of images: {args.counts}")
        for count in args.counts:
            reuse = [m for m in results.speed if count == args.images and m.subject in (FLOOR_SUBJECT, ours(engines[0]))]
            if reuse:
                results.counts += reuse
                continue
            folder = count_set(sources, count, args.scratch)
            results.counts += speed(args, engines[:1], folder, count, args.scaling_repeats, f"{count} images", False, shown)
        if 2000 not in args.counts:
            results.notes.append(f"Image counts run: {', '.join(map(str, args.counts))} (`--counts`); the 2,000-image run was left out.")
        results.counts.sort(key=lambda m: (_table_order(m), m.images))
    if "sizes" not in args.skip:
        log(f"scaling with the image size: {args.sizes}")
        for width, height in args.sizes:
            folder = size_set(sources[: args.size_images], width, height, args.scratch)
            results.sizes += speed(args, engines[:1], folder, args.size_images, args.scaling_repeats, f"{width}x{height}", False, shown)
        results.sizes.sort(key=lambda m: (_table_order(m), _pixels(m.condition)))
    if "analysis" not in args.skip:
        log("analysis: morphology cost, report.html of a big run")
        results.analysis = analysis(args, sources, results, engines[0], shown)
    if "scaleout" not in args.skip:
        if importlib.util.find_spec("ray") is None:
            log("scale-out: Ray is not installed (pip install 'vesselseg[ray]'), not measured")
            results.notes.append("Scale-out was not measured: Ray is not installed (`pip install 'vesselseg[ray]'`).")
        else:
            log(f"scale-out: {args.scaleout_images} images, one process and --ray local")
            folder = count_set(sources, args.scaleout_images, args.scratch)
            results.scaleout = measure_scaleout(folder, args.scaleout_images, args.scratch, args.scaleout_repeats, REPO,
                                                args.model)
    results.notes += [
        "The report's path runs randomly initialised weights (seed 0): a network's time does not depend on its weights, "
        "and the report's trained weights are not available here. Its accuracy figures are the report's own.",
        "Our pipeline runs with its default options (tile size, overlap, batch size, workers) and writes masks, overlays "
        "and results.csv, like a user's run; the report's path writes 512x512 masks only.",
        "All figures on this page come from the same run on the machine above; rerun `make bench` to reproduce them.",
    ]
    return results


def analysis(args: argparse.Namespace, sources: list[Path], results: Results, engine: str, shown: Shown) -> dict:
    """bench.analysis on a fresh DRIVE test run (copied to 2,000 images), against the per-image time."""
    out = args.scratch / "analysis-run"
    shutil.rmtree(out, ignore_errors=True)
    test = args.data / "DRIVE" / "test"
    images = sources[:1] if args.quick else sources  # the DRIVE test images
    target = sources[0] if args.quick else test / "images"
    segment = segment_command(args, engine, target, out) + ["--gt", str(test / "1st_manual"), "--fov", str(test / "mask")]
    timed = run_once(segment, cwd=REPO)
    rows, copies = (2000, 2) if args.quick else (100_000, max(1, 2000 // len(images)))  # 20 x 100 = 2,000
    command = ["-m", "bench.analysis", "--data", str(args.data), "--rows", str(rows), "--run", str(out), "--copies", str(copies)]
    command += ["--repeats", "1"] if args.quick else []
    figures = dict(run_once([PY, *command], cwd=REPO).report)
    shutil.rmtree(out, ignore_errors=True)
    best = min(results.ours(), key=lambda m: m.wall_s) if results.ours() else None
    if best is not None:
        figures["per_image_ms"], figures["per_image_source"] = best.ms_per_image, best.subject.removeprefix(OURS_PREFIX)
    else:
        figures["per_image_ms"], figures["per_image_source"] = 1000 * timed.wall_s / len(images), "segment (this run)"
    figures["copies"] = copies
    figures["command"] = shown.command([PY, *command]).replace(str(out), "OUT")  # OUT: a segment run's folder
    return figures


def _shipped(suffix: str) -> Path:
    from vesselcli.engines import shipped_model

    return shipped_model(suffix)


def _pixels(condition: str) -> int:
    w, h = (int(v) for v in condition.split("x"))
    return w * h


def chart(results: Results, path: Path) -> bool:
    """Draw the PNG when there are speed figures; whether it was drawn."""
    kinds = {REPORT_SUBJECT: ("report path (eager PyTorch)", "report"), FLOOR_SUBJECT: ("I/O floor (no model)", "floor")}
    bars = []
    for m in results.speed:
        label, kind = kinds.get(m.subject, (m.subject.replace(OURS_PREFIX, "ours: "), "ours"))
        bars.append(Bar(label, m.images_per_s, kind))
    groups: dict[str, list[Bar]] = {}
    for m in results.sizes:
        kind = "floor" if m.subject == FLOOR_SUBJECT else "ours"
        label = "I/O floor" if kind == "floor" else m.subject.replace(OURS_PREFIX, "ours: ")
        groups.setdefault(m.condition, []).append(Bar(label, m.images_per_s, kind))
    sizes = sorted(groups.items(), key=lambda item: _pixels(item[0]))
    for _, group in sizes:
        group.sort(key=lambda b: b.kind != "ours")
    machine = results.machine
    footer = f"{machine['cpu']}, {machine['cores']} cores, {machine['date_utc']} - {results.command}"
    if not bars:
        return False
    draw_chart(path, bars, sizes, footer)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench", *argv])
    try:
        results = run(args, command)
    except (RunFailed, FileNotFoundError) as exc:
        log(f"bench: {exc}")
        return 1
    chart_name = None
    if chart(results, args.chart):
        chart_name = os.path.relpath(args.chart.resolve(), args.out.resolve().parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, chart_name))
    write_csv(results, args.csv)
    log(f"wrote {args.out}, {args.csv}, {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
