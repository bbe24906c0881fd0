"""Fault injection through the real ``vesselseg segment`` CLI: bad and odd inputs, image bombs, safety.

Every test drives the command as a user does. Where a mask must be right the real model runs
(``VESSELSEG_TEST_MODEL`` or the shipped ``vesselcli/models/default.onnx``); where only I/O is
under test a numpy engine stands in. The inputs come from ``fault_inputs.py``;
``fault_report.py`` prints the table of outcomes. Signals, locks and full disks are in
``test_faults_interruption.py``.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFile

from fault_checks import quiet_env, segment, snapshot, table, valid_mask
from fault_inputs import DRIVE_SHAPE, messy_folder, permission_is_enforced, png_header_only
from segment_fakes import DarkIsVessel, fundus, write_fundus
from vesselcli.io import imageio
from vesselcli.cli import main
from vesselcli.io.imageio import read_grey, read_mask
from vesselcli.analysis.metrics import confusion, dice


def deny_reading(monkeypatch, name: str) -> None:
    """Make opening files called ``name`` fail as a mode-000 file does for a normal user."""
    real_open = Image.open

    def guarded(fp, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - Pillow's signature
        if Path(str(fp)).name == name:
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(imageio.Image, "open", guarded)


# -- bad, odd and good inputs in one folder ------------------------------------------------
@pytest.mark.data
def test_a_messy_folder_gives_each_good_image_a_mask_and_each_bad_one_an_error_row(
        tmp_path: Path, drive_root: Path, model_file: Path, monkeypatch) -> None:
    cases = messy_folder(tmp_path, drive_root)
    if not permission_is_enforced(tmp_path):  # root reads mode-000 files: simulate a normal user
        deny_reading(monkeypatch, "unreadable.tif")
    out = tmp_path / "out"
    before = snapshot(tmp_path, out)
    result = segment(tmp_path / "in", "--out", out, "--model", model_file)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = {r["image"]: r for r in table(out)}
    expected = [c for c in cases if c.expect != "absent"]
    assert sorted(rows) == sorted(c.name for c in expected)  # each image once, the loop ended
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for case in expected:
        row = rows[case.name]
        assert row["status"] == case.expect, (case.fault, row)
        if case.expect == "error":
            assert case.message in row["error"], (case.fault, row["error"])
            assert f"error: {case.name}: {row['error']}" in error_lines
            continue
        mask = valid_mask(out / "masks" / f"{case.key}.png", case.shape)
        assert (int(row["height"]), int(row["width"])) == case.shape
        assert int(row["vessel_pixels"]) == np.count_nonzero(mask)
        with Image.open(out / "overlays" / f"{case.key}.jpg") as overlay:
            assert overlay.size == case.shape[::-1]
        if case.photo:
            assert 0.07 < float(row["vessel_density"]) < 0.2, (case.fault, row)
    assert len(error_lines) == sum(c.expect == "error" for c in expected)
    masks = {p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png")}
    assert masks == {f"{c.key}.png" for c in expected if c.expect == "ok"}
    assert snapshot(tmp_path, out) == before  # nothing outside OUT was touched
    # grey, 16-bit grey and the colour photograph they came from agree; so do 16-bit and 8-bit colour
    assert np.array_equal(read_grey(out / "masks" / "grey8.png"), read_grey(out / "masks" / "grey16.png"))

    done = {p: p.stat().st_mtime_ns for p in (out / "masks").rglob("*.png")}
    again = segment(tmp_path / "in", "--out", out, "--model", model_file)
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert f"skipping {len(masks)} image(s) already done" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "masks").rglob("*.png")} == done  # not redone
    assert sorted(r["image"] for r in table(out)) == sorted(rows)  # bad ones tried again, still one row each


@pytest.mark.data
def test_an_annotation_of_the_wrong_size_is_an_error_row_and_the_others_are_scored(
        tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    test = drive_root / "test"
    (tmp_path / "gt").mkdir()
    shutil.copy(test / "1st_manual" / "01_manual1.gif", tmp_path / "gt")
    Image.open(test / "1st_manual" / "02_manual1.gif").resize((282, 292)).save(tmp_path / "gt" / "02_manual1.gif")
    images = [test / "images" / f"{n:02d}_test.tif" for n in (1, 2)]
    result = segment(*images, "--out", tmp_path / "out", "--gt", tmp_path / "gt", "--model", model_file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = {r["image"]: r for r in table(tmp_path / "out")}
    assert rows["02_test.tif"]["status"] == "error"
    assert "annotation 02_manual1.gif is 282x292 but the image is 565x584" in rows["02_test.tif"]["error"]
    assert rows["01_test.tif"]["status"] == "ok" and float(rows["01_test.tif"]["dice"]) > 0.75
    mask = valid_mask(tmp_path / "out" / "masks" / "01_test.png", DRIVE_SHAPE) > 0
    truth, fov = read_mask(test / "1st_manual" / "01_manual1.gif"), read_mask(test / "mask" / "01_test_mask.gif")
    assert dice(confusion(mask, truth, fov)) > 0.75


# -- image bombs ---------------------------------------------------------------------------
def test_images_above_max_pixels_are_refused_from_their_header_without_decoding(
        tmp_path: Path, fake_engine: DarkIsVessel, monkeypatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "bomb.png").write_bytes(png_header_only(100_000, 100_000))  # 30 GB if decoded
    Image.new("RGB", (8000, 8000), (150, 70, 30)).save(src / "big8000.png")
    write_fundus(src / "small.png", 96, 110)
    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):  # noqa: ANN001, ANN202
        decoded.append(Path(self.filename).name)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    result = segment(src, "--out", tmp_path / "out", "--max-pixels", 50_000_000, "--tile-size", 128)
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = {r["image"]: r for r in table(tmp_path / "out")}
    assert "100000x100000 = 10,000,000,000 pixels, above the limit of 50,000,000" in rows["bomb.png"]["error"]
    assert "8000x8000 = 64,000,000 pixels, above the limit of 50,000,000" in rows["big8000.png"]["error"]
    assert all("raise --max-pixels" in rows[n]["error"] for n in ("bomb.png", "big8000.png"))
    assert rows["small.png"]["status"] == "ok"
    assert set(decoded) == {"small.png"}  # the refused files were never decoded


def test_the_default_limit_refuses_a_bomb_and_max_pixels_refuses_ordinary_images(
        tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bomb.png").write_bytes(png_header_only(65_535, 65_535))
    write_fundus(tmp_path / "in" / "small.png", 96, 110)
    result = segment(tmp_path / "in", "--out", tmp_path / "a", "--tile-size", 128)
    rows = {r["image"]: r for r in table(tmp_path / "a")}
    assert "above the limit of 268,000,000" in rows["bomb.png"]["error"] and rows["small.png"]["status"] == "ok"
    result = segment(tmp_path / "in" / "small.png", "--out", tmp_path / "b", "--max-pixels", 10_000)
    assert result.exit_code == 1 and "110x96 = 10,560 pixels, above the limit of 10,000" in result.stderr


# -- safety --------------------------------------------------------------------------------
def test_nothing_is_written_outside_out_whatever_the_names_and_links(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    src, elsewhere, out = tmp_path / "in", tmp_path / "elsewhere", tmp_path / "out"
    write_fundus(src / "a.png")
    write_fundus(src / "a..b.png")
    write_fundus(elsewhere / "linked.png")
    os.symlink(elsewhere, src / "folder-link")
    os.symlink(elsewhere / "linked.png", src / "file-link.png")
    os.symlink("../elsewhere", src / "relative-link")  # the same folder again: visited once
    dots = tmp_path / "..png"  # given directly: a name that is all dots and a suffix
    Image.fromarray(fundus()).save(dots, format="PNG")
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not to be touched")
    (out / "masks").mkdir(parents=True)
    os.symlink(victim, out / "masks" / "a.png")  # a planted link where a mask goes
    before = snapshot(tmp_path, out)
    result = segment(src, dots, "--out", out, "--tile-size", 128)
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path, out) == before and victim.read_bytes() == b"not to be touched"
    assert not (out / "masks" / "a.png").is_symlink()  # the link was replaced, not followed
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "masks/..png.png" in made and "masks/folder-link/linked.png" in made
    assert all(os.path.realpath(out / p).startswith(os.path.realpath(out) + os.sep) for p in made)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    torch.save({"format": "vesselseg-checkpoint/1", "model": Payload()}, tmp_path / "evil.pt")
    write_fundus(tmp_path / "in" / "a.png")
    result = segment(tmp_path / "in", "--out", tmp_path / "out", "--model", tmp_path / "evil.pt")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "a safe, weights-only load refused it" in result.stderr and "nothing in it was run" in result.stderr
    assert "weights_only` set to `False`" not in result.output  # torch's advice to load it unsafely is not passed on
    info = CliRunner().invoke(main, ["info", "--model", str(tmp_path / "evil.pt")], catch_exceptions=False)
    assert info.exit_code != 0 and "nothing in it was run" in info.output
    assert not marker.exists()


@pytest.mark.data
def test_a_run_needs_no_network(tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    guard = (
        "import socket, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network access attempted: ' + repr(args))\n"
        "socket.socket.connect = socket.socket.connect_ex = refuse\n"
        "socket.create_connection = socket.getaddrinfo = refuse\n"
        "from vesselcli.cli import main\n"
        "sys.argv[0] = 'vesselseg'\n"
        "main()\n"
    )
    image = drive_root / "test" / "images" / "01_test.tif"
    done = subprocess.run([sys.executable, "-c", guard, "segment", str(image), "--out", str(tmp_path / "out"),
                           "--model", str(model_file), "-q"], capture_output=True, text=True, env=quiet_env(),
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "network access attempted" not in done.stderr
    valid_mask(tmp_path / "out" / "masks" / "01_test.png", DRIVE_SHAPE)


# -- the output folder itself --------------------------------------------------------------
def test_odd_output_folders_are_clear_errors(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    result = segment(tmp_path / "in", "--out", tmp_path / "in")
    assert result.exit_code == 2 and "is inside the output folder" in result.output
    (tmp_path / "out").mkdir()
    for other in (b"\xff\xfeA\x00,\x00B\x00\n\x00", b"a file without a line end"):  # UTF-16 spreadsheet, a note
        (tmp_path / "out" / "results.csv").write_bytes(other)
        result = segment(tmp_path / "in", "--out", tmp_path / "out")
        assert result.exit_code == 2 and "is not a vesselseg results file" in result.stderr
        assert "Traceback" not in result.output and (tmp_path / "out" / "results.csv").read_bytes() == other
    (tmp_path / "out" / "results.csv").unlink()
    (tmp_path / "out" / "masks").write_text("a file where the masks folder goes")
    result = segment(tmp_path / "in", "--out", tmp_path / "out", "--tile-size", 128)
    assert result.exit_code == 1 and f"cannot write outputs: File exists ({tmp_path / 'out' / 'masks'})" in result.stderr


def test_written_files_are_readable_like_any_new_file(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    assert segment(tmp_path / "in", "--out", tmp_path / "out", "--tile-size", 128).exit_code == 0
    (tmp_path / "plain").write_bytes(b"x")  # what the umask gives any new file
    usual = (tmp_path / "plain").stat().st_mode & 0o777
    for path in ("results.csv", "masks/a.png", "overlays/a.jpg"):
        assert (tmp_path / "out" / path).stat().st_mode & 0o777 == usual, path


def test_a_folder_that_cannot_be_listed_is_a_warning_and_exit_code_1(tmp_path: Path, fake_engine: DarkIsVessel,
                                                                     monkeypatch) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    locked = tmp_path / "in" / "locked"
    write_fundus(locked / "b.png")
    if permission_is_enforced(tmp_path):
        os.chmod(locked, 0)
    else:  # root lists mode-000 folders: simulate a normal user
        real_scandir = os.scandir

        def guarded(path):  # noqa: ANN001, ANN202
            if Path(path) == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", guarded)
    try:
        result = segment(tmp_path / "in", "--out", tmp_path / "out", "--tile-size", 128)
        alone = segment(locked, "--out", tmp_path / "out2")
    finally:
        os.chmod(locked, 0o755)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"warning: cannot list {locked}: Permission denied; the images in it are not included" in result.stderr
    assert [r["image"] for r in table(tmp_path / "out")] == ["a.png"]
    assert alone.exit_code == 2 and f"no images found: cannot list {locked}: Permission denied" in alone.output
