"""Fault injection through the real ``vesselseg segment`` CLI: signals, a second run, full and read-only disks.

A run stopped in any way (SIGINT, SIGTERM, twice, SIGKILL) leaves only whole files and whole
CSV rows, and the same command then finishes the rest without redoing anything; a second run
into the same OUT is refused while the first goes on; a disk that fills up or turns read-only
stops the run with a clear message, keeping what was written.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fault_checks import (  # noqa: F401 - fixtures
    cli_command, link_drive_images, quiet_env, segment, table, valid_mask, wait_for_rows,
)
from fault_inputs import DRIVE_SHAPE, read_only_is_enforced
from segment_fakes import DarkIsVessel, write_fundus
from vesselcli.io import lock
from vesselcli.run import report, stages


@pytest.mark.data
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT twice", "SIGKILL"])
def test_a_run_stopped_by_a_signal_leaves_whole_files_and_the_same_command_finishes_the_rest(
        tmp_path: Path, drive_root: Path, model_file: Path, how: str) -> None:
    names = link_drive_images(tmp_path / "in", drive_root, 10)
    out = tmp_path / "out"
    command = cli_command(tmp_path / "in", out, model_file, "--workers", "1")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=quiet_env(), text=True)
    wait_for_rows(out, 2, process)
    signum = getattr(signal, how.split()[0])
    process.send_signal(signum)
    if how.endswith("twice"):
        time.sleep(0.05)
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)  # promptly: a run that goes on fails here
    assert process.returncode == (-signal.SIGKILL if how == "SIGKILL" else 128 + signum), stderr
    assert "Traceback" not in stderr
    if how in ("SIGINT", "SIGTERM"):  # a clean stop finishes what is in flight: no temporary file left
        assert "rerun the same command" in stderr and not list(out.rglob(".tmp-*"))
    first = table(out)
    assert 2 <= len(first) < len(names) and all(r["status"] == "ok" for r in first)
    written = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    for row in first:  # every row has its mask, whole
        valid_mask(out / "masks" / row["image"].replace(".tif", ".png"), DRIVE_SHAPE)
    for name in written:  # and every mask decodes, with or without its row
        valid_mask(out / "masks" / name, DRIVE_SHAPE)

    finished = subprocess.run(command, capture_output=True, env=quiet_env(), text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    rows = table(out)
    assert sorted(r["image"] for r in rows) == sorted(names) and all(r["status"] == "ok" for r in rows)
    assert not list(out.rglob(".tmp-*"))
    for row in first:  # finished images were not redone
        name = row["image"].replace(".tif", ".png")
        assert (out / "masks" / name).stat().st_mtime_ns == written[name]
    for name in names:
        valid_mask(out / "masks" / name.replace(".tif", ".png"), DRIVE_SHAPE)


@pytest.mark.data
def test_a_second_run_into_the_same_out_is_refused_while_the_first_goes_on(
        tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    names = link_drive_images(tmp_path / "in", drive_root, 10)
    out = tmp_path / "out"
    first = subprocess.Popen(cli_command(tmp_path / "in", out, model_file), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=quiet_env(), text=True)
    try:
        wait_for_rows(out, 0, first)  # the header is written once the lock is held
        first.send_signal(signal.SIGSTOP)  # held mid-run, so the second run surely meets it
        second = segment(tmp_path / "in", "--out", out, "--model", model_file)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.exit_code == 2
    assert f"another vesselseg run (pid {first.pid} " in second.stderr and "choose another --out" in second.stderr
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert sorted(r["image"] for r in table(out)) == names


# -- full and read-only disks --------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_disk_that_fills_up_mid_run_stops_it_and_keeps_what_was_written(
        tmp_path: Path, fake_engine: DarkIsVessel, monkeypatch, code: int) -> None:
    for i in range(8):
        write_fundus(tmp_path / "in" / f"{i}.png", seed=i)
    real_write, writes = stages.write_atomic, []

    def filling(path: Path, data: bytes) -> None:
        writes.append(path)
        if len(writes) > 6:  # three images (mask and overlay each), then the disk is full
            raise OSError(code, os.strerror(code), str(path))
        real_write(path, data)

    monkeypatch.setattr(stages, "write_atomic", filling)
    out = tmp_path / "out"
    result = segment(tmp_path / "in", "--out", out, "--tile-size", 128, "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output
    fix = "make it writable" if code == errno.EROFS else "free space"
    assert f"cannot write into {out}: {os.strerror(code)}; {fix} or choose another --out, then rerun" in result.stderr
    rows = table(out)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for row in rows:
        valid_mask(out / "masks" / row["image"], (96, 110))
    assert not list(out.rglob(".tmp-*"))
    monkeypatch.setattr(stages, "write_atomic", real_write)  # space freed
    again = segment(tmp_path / "in", "--out", out, "--tile-size", 128)
    assert again.exit_code == 0 and len(table(out)) == 8


def test_a_results_file_that_cannot_grow_keeps_whole_rows_only(tmp_path: Path, fake_engine: DarkIsVessel,
                                                               monkeypatch) -> None:
    for i in range(5):
        write_fundus(tmp_path / "in" / f"{i}.png", seed=i)

    class FillingFile(io.FileIO):
        """Takes two rows, then writes half of the next one and reports a full disk."""

        rows = 0

        def write(self, data) -> int:  # noqa: ANN001
            FillingFile.rows += 1
            if FillingFile.rows > 2:
                super().write(bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def appending(path, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - open's signature
        return FillingFile(path, mode) if mode == "ab" else open(path, mode, *args, **kwargs)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(report, "open", appending, raising=False)
        result = segment(tmp_path / "in", "--out", out, "--tile-size", 128, "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot write {out / 'results.csv'}: No space left on device" in result.stderr
    assert len(table(out)) == 2  # the torn third row was taken back
    assert segment(tmp_path / "in", "--out", out, "--tile-size", 128).exit_code == 0
    assert sorted(r["image"] for r in table(out)) == [f"{i}.png" for i in range(5)]


def test_a_read_only_output_folder_is_a_clear_error_before_anything_runs(
        tmp_path: Path, fake_engine: DarkIsVessel, monkeypatch) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    if read_only_is_enforced(tmp_path):
        os.chmod(out, 0o555)
        reason = "Permission denied"
    else:  # root writes into mode-555 folders: make the file system say read-only instead
        real_open = os.open

        def read_only(path, flags, *args):  # noqa: ANN001, ANN002
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real_open(path, flags, *args)

        monkeypatch.setattr(lock.os, "open", read_only)
        reason = "Read-only file system"
    try:
        result = segment(tmp_path / "in", "--out", out, "--tile-size", 128)
    finally:
        os.chmod(out, 0o755)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"cannot write into {out}: {reason}; choose a writable --out" in result.stderr
    assert sorted(os.listdir(out)) == [] and not fake_engine.batches


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.mark.data
def test_a_real_full_then_read_only_file_system(tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights); the simulated disk tests cover this")
    try:
        names = link_drive_images(tmp_path / "in", drive_root, 8)
        out = disk / "out"
        command = cli_command(tmp_path / "in", out, model_file)[:-2]  # with overlays: they fill the disk
        full = subprocess.run(command, capture_output=True, env=quiet_env(), text=True, timeout=300)
        assert full.returncode == 1 and "Traceback" not in full.stderr
        assert "No space left on device; free space or choose another --out, then rerun" in full.stderr
        rows = table(out)
        assert 1 <= len(rows) < len(names)
        for mask in (out / "masks").glob("*.png"):
            valid_mask(mask, DRIVE_SHAPE)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        read_only = subprocess.run(command, capture_output=True, env=quiet_env(), text=True, timeout=300)
        assert read_only.returncode == 2 and "Read-only file system; choose a writable --out" in read_only.stderr
        assert table(out) == rows
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
