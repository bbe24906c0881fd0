"""Broken, odd and hostile inputs for the fault-injection suite (``tests/test_faults.py``).

``messy_folder`` builds what clinic folders hold, from real DRIVE photographs: odd formats
and bit depths, unicode, spaces, undecodable bytes and newlines in names, nested and
symlinked folders, a symlink loop, two images with one stem, a 9x9 crop and a large
upscaled photograph, next to zero-byte files, text files with image extensions, truncated
TIFF/PNG/JPEG files, a blank frame, a broken link, a pipe, an unreadable file and files
whose headers declare billions of pixels. Each ``Case`` says what a run must make of it.
``fault_report.py`` runs the same folder and prints the table of outcomes.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

#: Sizes of DRIVE photographs as (height, width).
DRIVE_SHAPE = (584, 565)


@dataclass(frozen=True)
class Case:
    """One input and what a run must make of it.

    ``name``: the CSV ``image`` value (the path under the input folder, escaped as the CSV
    writes it); ``key``: its mask is ``OUT/masks/<key>.png``. ``expect``: ``ok`` (a mask of ``shape`` = (H, W)), ``error`` (an error row
    whose message holds ``message``) or ``absent`` (no row: not an image of its own, e.g. a
    symlink loop). ``photo``: a real fundus photograph, so its vessel density must be plausible.
    """

    name: str
    fault: str
    expect: str
    key: str = ""
    message: str = ""
    shape: tuple[int, int] | None = None
    photo: bool = False


def drive_rgb(drive: Path, number: int) -> np.ndarray:
    """DRIVE test image ``number`` (1-20) as ``(584, 565, 3) uint8`` RGB."""
    with Image.open(drive / "test" / "images" / f"{number:02d}_test.tif") as img:
        return np.asarray(img.convert("RGB"))


def encoded(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with a few bytes of data.

    Decoding it would need ``3 * width * height`` bytes; a reader must refuse it from the header.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def jpeg_claiming(rgb: np.ndarray, width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    data = bytearray(encoded(rgb, "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _save(path: Path, array: np.ndarray, **options) -> None:  # noqa: ANN003 - Pillow's save options
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)


def _try_odd_name(folder: Path, raw: bytes, data: bytes) -> bool:
    """Create a file whose name is the bytes ``raw``; False where the file system refuses it."""
    try:
        with open(os.path.join(os.fsencode(folder), raw), "wb") as handle:
            handle.write(data)
        return True
    except (OSError, ValueError):
        return False


def messy_folder(root: Path, drive: Path) -> list[Case]:
    """Fill ``root / "in"`` (and ``root / "elsewhere"``, linked from it) with the fault cases."""
    src, elsewhere = root / "in", root / "elsewhere"
    src.mkdir(parents=True)
    test_images = drive / "test" / "images"
    cases: list[Case] = []

    def good(name: str, fault: str, shape: tuple[int, int] = DRIVE_SHAPE, photo: bool = True, key: str = "") -> None:
        cases.append(Case(name, fault, "ok", key or name.rsplit(".", 1)[0], shape=shape, photo=photo))

    def bad(name: str, fault: str, message: str) -> None:
        cases.append(Case(name, fault, "error", message=message))

    shutil.copy(test_images / "01_test.tif", src / "01_test.tif")
    good("01_test.tif", "plain DRIVE photograph (control)")
    shutil.copy(test_images / "02_test.tif", src / "ünïcode näme 02.tif")
    good("ünïcode näme 02.tif", "unicode and spaces in the name")
    (src / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(test_images / "03_test.tif", src / "nested" / "deeper" / "03_test.tif")
    good("nested/deeper/03_test.tif", "nested folders")
    os.symlink(test_images.resolve() / "04_test.tif", src / "link04.tif")
    good("link04.tif", "absolute symlink to a file in another folder")
    elsewhere.mkdir()
    shutil.copy(test_images / "05_test.tif", elsewhere / "05_test.tif")
    os.symlink(elsewhere, src / "linked")
    good("linked/05_test.tif", "symlinked folder")
    os.symlink(src, src / "nested" / "loop")
    cases.append(Case("nested/loop", "symlink loop (nested/loop -> in)", "absent"))
    shutil.copy(test_images / "06_test.tif", src / "06.tif")
    _save(src / "06.png", drive_rgb(drive, 6))
    good("06.tif", "two inputs with one stem (06.tif)", key="06.tif")
    good("06.png", "two inputs with one stem (06.png)", key="06.png")

    rgb7, rgb8, rgb9, rgb10 = (drive_rgb(drive, n) for n in (7, 8, 9, 10))
    _save(src / "grey8.png", rgb7[..., 1])
    good("grey8.png", "8-bit grey")
    _save(src / "grey16.png", rgb7[..., 1].astype(np.uint16) * 257)
    good("grey16.png", "16-bit grey PNG")
    rgb16 = rgb8.astype(np.uint16) * 257  # Pillow cannot write 16-bit colour; OpenCV can
    src.joinpath("rgb16.tif").write_bytes(cv2.imencode(".tif", rgb16[..., ::-1])[1].tobytes())
    good("rgb16.tif", "16-bit colour TIFF")
    _save(src / "rgba.png", np.dstack([rgb9, np.full(rgb9.shape[:2], 255, np.uint8)]))
    good("rgba.png", "RGBA")
    Image.fromarray(rgb10).convert("P", palette=Image.Palette.ADAPTIVE).save(src / "palette.gif")
    good("palette.gif", "palette (GIF, 256 colours)")
    _save(src / "tiny9.png", rgb10[300:309, 150:159])
    good("tiny9.png", "9x9 pixels", shape=(9, 9), photo=False)
    big = cv2.resize(drive_rgb(drive, 11), (565 * 5 // 2, 584 * 5 // 2), interpolation=cv2.INTER_CUBIC)
    _save(src / "large.jpg", big, quality=92)
    good("large.jpg", "large photograph (1412x1460, brought to model scale by its FOV)", shape=big.shape[:2])
    tif12 = (test_images / "12_test.tif").read_bytes()
    if _try_odd_name(src, b"caf\xe9 12.tif", tif12):
        good("caf\\xe9 12.tif", "file name that is not UTF-8 (latin-1 byte)")
    if _try_odd_name(src, b"line\nbreak 13.tif", (test_images / "13_test.tif").read_bytes()):
        good("line\\x0abreak 13.tif", "newline in the file name")

    _write(src / "zero.png", b"")
    bad("zero.png", "zero-byte file", "file is empty (0 bytes)")
    _write(src / "notes.jpg", b"Patient list\nnot an image\n")
    bad("notes.jpg", "text file with .jpg extension", "its contents are in no format vesselseg reads")
    _write(src / "notes.tif", b"II*\x00 a text file that starts like a TIFF\n")
    bad("notes.tif", "text file with .tif extension (TIFF magic)", "not a readable image")
    rgb1 = drive_rgb(drive, 1)
    for fmt, ext in (("TIFF", "tif"), ("PNG", "png"), ("JPEG", "jpg")):
        data = encoded(rgb1, fmt)
        _write(src / f"truncated.{ext}", data[: len(data) // 2])
        bad(f"truncated.{ext}", f"truncated {fmt} (half the file)", "damaged or truncated")
    _write(src / "header_only.jpg", encoded(rgb1, "JPEG")[:300])
    bad("header_only.jpg", "JPEG cut inside its header", "damaged or truncated")
    _save(src / "blank.png", np.full((400, 400, 3), (90, 40, 20), np.uint8))
    bad("blank.png", "blank frame (one flat colour)", "the image is blank")
    os.symlink(root / "deleted.png", src / "dangling.png")
    bad("dangling.png", "broken symlink", "broken symbolic link")
    if hasattr(os, "mkfifo"):
        os.mkfifo(src / "pipe.png")
        bad("pipe.png", "named pipe with an image name", "not a regular file")
    shutil.copy(test_images / "14_test.tif", src / "unreadable.tif")
    os.chmod(src / "unreadable.tif", 0)
    bad("unreadable.tif", "unreadable file (mode 000)", "permission denied")
    _write(src / "bomb.png", png_header_only(100_000, 100_000))
    bad("bomb.png", "PNG header declaring 100000x100000 (image bomb)", "above the limit of 268,000,000")
    _write(src / "bomb.jpg", jpeg_claiming(rgb1[:64, :64], 65_000, 65_000))
    bad("bomb.jpg", "JPEG header declaring 65000x65000 (image bomb)", "above the limit of 268,000,000")
    return cases


def permission_is_enforced(folder: Path) -> bool:
    """Whether a mode-000 file in ``folder`` really cannot be read (False for root, which reads anyway)."""
    probe = folder / ".permission-probe"
    probe.write_bytes(b"x")
    os.chmod(probe, 0)
    try:
        with open(probe, "rb"):
            return False
    except PermissionError:
        return True
    finally:
        os.chmod(probe, 0o600)
        probe.unlink()


def read_only_is_enforced(folder: Path) -> bool:
    """Whether a mode-555 folder really refuses new files (False for root)."""
    probe = folder / ".readonly-probe"
    probe.mkdir()
    os.chmod(probe, 0o555)
    try:
        (probe / "x").write_bytes(b"x")
        return False
    except PermissionError:
        return True
    finally:
        os.chmod(probe, 0o755)
        shutil.rmtree(probe)
