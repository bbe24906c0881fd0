"""Run every fault case once through the real CLI and print what became of each; interrupt and resume a long run.

    python tests/fault_report.py table --data ../shared/data --work /tmp/faults
    python tests/fault_report.py interrupt --data ../shared/data --work /tmp/interrupt -n 60

``table`` prints one Markdown row per fault: what the run made of it (status and message, as
in results.csv or on stderr) and the exit code of that run. ``interrupt`` links ``-n``
photographs (DRIVE test, DRIVE training, then CHASE_DB1) into a folder, sends SIGINT once a
few masks are written, checks what is on disk, reruns the same command and checks again:
exactly ``n`` valid masks and ``n`` distinct rows, finished images not redone.
Both use the shipped model unless ``--model`` is given; the tests in ``test_faults*.py``
assert the same behaviour in CI.
"""
from __future__ import annotations

import argparse
import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_checks import quiet_env, table, valid_mask, wait_for_rows  # noqa: E402
from fault_inputs import DRIVE_SHAPE, drive_rgb, messy_folder, permission_is_enforced, png_header_only  # noqa: E402
from vesselcli.io import imageio  # noqa: E402
from vesselcli.cli import main  # noqa: E402

Row = tuple[str, str, str, str]  # fault, outcome, message, exit code


def cli(*args: object, model: Path | None) -> list[str]:
    extra = ["--model", str(model)] if model else []
    return [sys.executable, "-m", "vesselcli", "segment", *map(str, args), *extra]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run(command, capture_output=True, text=True, env=quiet_env(), timeout=600, **kwargs)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    return lines[-1].removeprefix("Error: ") if lines else ""


def outcome(row: dict[str, str]) -> str:
    if row["status"] != "ok":
        return "error row"
    return f"ok: mask {row['width']}x{row['height']}, density {float(row['vessel_density']):.3f}"


def messy(work: Path, data: Path, model: Path | None) -> list[Row]:
    cases = messy_folder(work, data / "DRIVE")
    simulated = not permission_is_enforced(work)
    real_open = imageio.Image.open
    if simulated:  # root reads mode-000 files: the file is refused as a normal user's run would refuse it
        def guarded(fp, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            if Path(str(fp)).name == "unreadable.tif":
                raise PermissionError(errno.EACCES, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)

        imageio.Image.open = guarded
    try:
        args = ["segment", str(work / "in"), "--out", str(work / "out"), "-q"] + (["--model", str(model)] if model else [])
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        imageio.Image.open = real_open
    rows = {r["image"]: r for r in table(work / "out")}
    out: list[Row] = []
    for case in cases:
        fault = case.fault + (" (simulated: root reads mode-000 files)" if simulated and case.name == "unreadable.tif" else "")
        if case.expect == "absent":
            out.append((fault, "walk ends; each image once" if case.name not in rows else "ROW", "", str(result.exit_code)))
        else:
            out.append((fault, outcome(rows[case.name]), rows[case.name]["error"], str(result.exit_code)))
    return out


def big_images(work: Path, data: Path, model: Path | None) -> list[Row]:
    folder = work / "big"
    folder.mkdir()
    rgb = drive_rgb(data / "DRIVE", 1)
    photo = np.zeros((8000, 8000, 3), np.uint8)
    photo[:, 130:7870] = cv2.resize(rgb, (7740, 8000), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(photo).save(folder / "photo8000.jpg", quality=90)
    del photo
    Image.new("RGB", (8000, 8000), (150, 70, 30)).save(folder / "solid8000.png")
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    rows: list[Row] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = run(cli(folder, "--out", work / "big-out", "-q", "--no-overlays", model=model))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    got = {r["image"]: r for r in table(work / "big-out")}
    valid_mask(work / "big-out" / "masks" / "photo8000.png", (8000, 8000))
    rows.append((f"8000x8000 photograph (upscaled DRIVE 01; run {seconds:.1f} s, peak RSS {max(peak, before) / 1024:.0f} MiB)",
                 outcome(got["photo8000.jpg"]), got["photo8000.jpg"]["error"], str(done.returncode)))
    rows.append(("8000x8000 solid colour", outcome(got["solid8000.png"]), got["solid8000.png"]["error"], str(done.returncode)))
    rows.append(("PNG header declaring 100000x100000, default limit", outcome(got["bomb.png"]), got["bomb.png"]["error"],
                 str(done.returncode)))
    limited = run(cli(folder, "--out", work / "big-limited", "-q", "--max-pixels", "50000000", model=model))
    got = {r["image"]: r for r in table(work / "big-limited")}
    rows.append(("8000x8000 with --max-pixels 50000000", outcome(got["photo8000.jpg"]), got["photo8000.jpg"]["error"],
                 str(limited.returncode)))
    return rows


def annotations(work: Path, data: Path, model: Path | None) -> list[Row]:
    test = data / "DRIVE" / "test"
    (work / "gt").mkdir()
    shutil.copy(test / "1st_manual" / "01_manual1.gif", work / "gt")
    Image.open(test / "1st_manual" / "02_manual1.gif").resize((282, 292)).save(work / "gt" / "02_manual1.gif")
    done = run(cli(test / "images" / "01_test.tif", test / "images" / "02_test.tif", "--out", work / "gt-out",
                   "--gt", work / "gt", "-q", model=model))
    got = {r["image"]: r for r in table(work / "gt-out")}
    return [("ground truth of the wrong size (282x292 for 565x584)", outcome(got["02_test.tif"]), got["02_test.tif"]["error"],
             str(done.returncode)),
            ("ground truth of the right size (control)", f"{outcome(got['01_test.tif'])}, Dice {float(got['01_test.tif']['dice']):.3f}",
             "", str(done.returncode))]


def output_folders(work: Path, data: Path, model: Path | None) -> list[Row]:
    image = data / "DRIVE" / "test" / "images" / "01_test.tif"
    rows: list[Row] = []
    (work / "same").mkdir()
    shutil.copy(image, work / "same")
    done = run(cli(work / "same", "--out", work / "same", model=model))
    rows.append(("--out equal to the input folder", "refused", last_line(done.stderr), str(done.returncode)))
    (work / "foreign").mkdir()
    (work / "foreign" / "results.csv").write_bytes("A;B\n".encode("utf-16"))
    done = run(cli(image, "--out", work / "foreign", model=model))
    rows.append(("OUT holds someone else's results.csv (UTF-16)", "refused, file kept", last_line(done.stderr), str(done.returncode)))
    (work / "blocked").mkdir()
    (work / "blocked" / "masks").write_text("x")
    done = run(cli(image, "--out", work / "blocked", "-q", model=model))
    rows.append(("a file named OUT/masks", "error row", last_line(done.stderr.split("\n1 image(s)")[0]), str(done.returncode)))
    return rows


def checkpoints(work: Path, data: Path, model: Path | None) -> list[Row]:
    import pickle

    import torch

    marker = work / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    torch.save({"format": "vesselseg-checkpoint/1", "model": Payload()}, work / "evil.pt")
    with open(work / "evil-plain.pt", "wb") as handle:
        pickle.dump({"model": Payload()}, handle)
    rows: list[Row] = []
    image = data / "DRIVE" / "test" / "images" / "01_test.tif"
    for name in ("evil.pt", "evil-plain.pt"):
        done = run(cli(image, "--out", work / "evil-out", model=work / name))
        ran = "CODE RAN" if marker.exists() else "refused, payload not run"
        rows.append((f"checkpoint with a __reduce__ payload ({name})", ran, last_line(done.stderr), str(done.returncode)))
    return rows


def concurrent(work: Path, data: Path, model: Path | None) -> list[Row]:
    folder = link(work / "conc-in", data, 10)
    first = subprocess.Popen(cli(folder, "--out", work / "conc-out", "-q", model=model), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=quiet_env(), text=True)
    try:
        wait_for_rows(work / "conc-out", 0, first)
        first.send_signal(signal.SIGSTOP)
        second = run(cli(folder, "--out", work / "conc-out", model=model))
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=600)
    rows = table(work / "conc-out")
    return [("second run into the same OUT while the first runs", "refused", last_line(second.stderr), str(second.returncode)),
            ("... the first run then", f"finished {len(rows)} distinct rows", "", str(first.returncode))]


def disks(work: Path, data: Path, model: Path | None) -> list[Row]:
    disk = work / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode:
        return [("full disk / read-only disk (real tmpfs)", "not run: cannot mount a tmpfs here", "", "")]
    try:
        folder = link(work / "disk-in", data, 10)
        full = run(cli(folder, "--out", disk / "out", "-q", model=model))
        kept = table(disk / "out")
        for path in (disk / "out" / "masks").glob("*.png"):
            valid_mask(path, DRIVE_SHAPE)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        read_only = run(cli(folder, "--out", disk / "out", "-q", model=model))
        return [("disk full mid-run (256 KiB tmpfs)", f"stopped; {len(kept)} whole rows, every mask decodes",
                 last_line(full.stderr), str(full.returncode)),
                ("read-only OUT (tmpfs remounted ro)", "refused before any image", last_line(read_only.stderr),
                 str(read_only.returncode))]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def link(folder: Path, data: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    drive = data / "DRIVE"
    sources = (sorted((drive / "test" / "images").glob("*.tif")) + sorted((drive / "training" / "images").glob("*.tif"))
               + sorted((data / "CHASE_DB1" / "images").glob("*.jpg")))
    if len(sources) < count:
        raise SystemExit(f"only {len(sources)} photographs in {data}; ask for fewer")
    for path in sources[:count]:
        os.symlink(path.resolve(), folder / path.name)
    return folder


def interrupt(work: Path, data: Path, model: Path | None, count: int, after: int, signum: int) -> None:
    """Stop a run of ``count`` images with ``signum`` after ``after`` masks, rerun, check and print."""
    folder = link(work / "in", data, count)
    out = work / "out"
    command = cli(folder, "--out", out, model=model)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=quiet_env(), text=True)
    wait_for_rows(out, after, process, limit=600)
    sent = time.perf_counter()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    stopped = time.perf_counter()
    first = table(out)
    leftovers = list(out.rglob(".tmp-*"))
    masks = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    for row in first:
        valid_mask(out / "masks" / (row["image"].rsplit(".", 1)[0] + ".png"), read_size(folder / row["image"]))
    print(f"run 1: {signal.Signals(signum).name} sent {sent - started:.1f} s after start, when {after} rows were written; "
          f"exit code {process.returncode} after {stopped - sent:.2f} s; {len(first)} rows ({len({r['image'] for r in first})} "
          f"distinct), {len(masks)} masks, {len(leftovers)} temporary files left")
    print("  stderr:", " | ".join(line for line in stderr.strip().splitlines()))
    again_started = time.perf_counter()
    again = run(command)
    rows = table(out)
    redone = [n for n in (r["image"].rsplit(".", 1)[0] + ".png" for r in first)
              if (out / "masks" / n).stat().st_mtime_ns != masks[n]]
    for row in rows:
        valid_mask(out / "masks" / (row["image"].rsplit(".", 1)[0] + ".png"), read_size(folder / row["image"]))
    all_masks = list((out / "masks").glob("*.png"))
    print(f"run 2 (same command): exit code {again.returncode} in {time.perf_counter() - again_started:.1f} s; "
          f"{len(rows)} rows, {len({r['image'] for r in rows})} distinct, {sum(r['status'] == 'ok' for r in rows)} ok; "
          f"{len(all_masks)} masks, all decode at their image's size; {len(list(out.rglob('.tmp-*')))} temporary files; "
          f"{len(redone)} of the {len(first)} images finished in run 1 were redone")
    print("  stderr:", " | ".join(line for line in again.stderr.strip().splitlines()[:2]))


def read_size(path: Path) -> tuple[int, int]:
    width, height = imageio.image_size(path)
    return height, width


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["table", "interrupt"])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--model", type=Path, default=None, help="Default: the shipped model.")
    parser.add_argument("--work", type=Path, required=True, help="An empty or new folder for inputs and outputs.")
    parser.add_argument("-n", type=int, default=60, help="Images for `interrupt`.")
    parser.add_argument("--after", type=int, default=5, help="Rows written before the signal (`interrupt`).")
    parser.add_argument("--signal", choices=["SIGINT", "SIGTERM"], default="SIGINT")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if any(args.work.iterdir()):
        raise SystemExit(f"{args.work} is not empty; give a new folder")
    if args.what == "interrupt":
        interrupt(args.work, args.data, args.model, args.n, args.after, getattr(signal, args.signal))
        return
    rows: list[Row] = []
    for part in (messy, big_images, annotations, output_folders, checkpoints, concurrent, disks):
        part_work = args.work / part.__name__
        part_work.mkdir()
        rows.extend(part(part_work, args.data, args.model))
    print("| fault | outcome | message | exit code |")
    print("|---|---|---|---|")
    for fault, result, message, code in rows:
        print(f"| {fault} | {result} | {message.replace('|', '/')} | {code} |")


if __name__ == "__main__":
    main_()
