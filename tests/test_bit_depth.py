"""16-bit files holding 10- or 12-bit data are scaled by their real bit depth (sBIT, else the data's)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from vesselcli.io.imageio import binarise, orient, png_significant_bits, read_image, significant_top


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path: Path, array: np.ndarray, sbit: bytes | None = None) -> Path:
    """A 16-bit PNG written by hand: ``(H, W)`` grey or ``(H, W, 3)`` RGB uint16, with an sBIT chunk if given."""
    height, width = array.shape[:2]
    colour_type = 0 if array.ndim == 2 else 2
    rows = array.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + (_chunk(b"sBIT", sbit) if sbit else b"") + _chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks + _chunk(b"IEND", b""))
    return path


RAMP12 = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # every 12-bit level once


@pytest.mark.parametrize("sbit", [None, b"\x0c"])
def test_a_12_bit_grey_png_keeps_its_levels(tmp_path: Path, sbit: bytes | None) -> None:
    grey = read_image(write_png16(tmp_path / "g.png", RAMP12, sbit))[..., 0]
    assert len(np.unique(grey)) == 256  # 65535 as the top left 17 levels
    assert grey[0, 0] == 0 and grey[-1, -1] == 255 and grey.flat[2048] == 128


def test_the_sbit_chunk_decides_over_the_data(tmp_path: Path) -> None:
    dim = (RAMP12 // 2).astype(np.uint16)  # 12-bit data that never reaches 2047
    with_sbit = read_image(write_png16(tmp_path / "a.png", dim, b"\x0c"))[..., 0]
    without = read_image(write_png16(tmp_path / "b.png", dim))[..., 0]
    assert with_sbit.max() == 127 and without.max() == 255  # 2047/4095 vs 2047/2047
    # sBIT 12 on samples scaled up to 16 bits, as the PNG specification asks: the full range
    scaled = read_image(write_png16(tmp_path / "c.png", RAMP12 << 4, b"\x0c"))[..., 0]
    plain = read_image(write_png16(tmp_path / "d.png", RAMP12))[..., 0]
    assert len(np.unique(scaled)) == 256 and np.abs(scaled.astype(int) - plain).max() <= 1


@pytest.mark.parametrize("sbit", [None, b"\x0a\x0a\x0a"])
def test_a_10_bit_colour_png_keeps_its_levels_and_colours(tmp_path: Path, sbit: bytes | None) -> None:
    ramp = np.arange(1024, dtype=np.uint16).reshape(32, 32)
    rgb16 = np.stack([ramp, ramp // 2, ramp // 4], axis=2)
    rgb = read_image(write_png16(tmp_path / "c.png", rgb16, sbit))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    assert len(np.unique(rgb[..., 0])) == 256 and rgb[-1, -1].tolist() == [255, 127, 64]  # 1023, 511, 255 of 1023


def test_full_16_bit_and_8_bit_in_16_bit_files_read_as_before(tmp_path: Path) -> None:
    full = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    assert np.array_equal(read_image(write_png16(tmp_path / "f.png", full))[..., 0], (full // 257).astype(np.uint8))
    low = np.arange(200, dtype=np.uint16).reshape(10, 20)
    assert np.array_equal(read_image(write_png16(tmp_path / "l.png", low))[..., 0], low.astype(np.uint8))


def test_significant_bits_are_read_from_the_chunk_alpha_left_out(tmp_path: Path) -> None:
    assert png_significant_bits(write_png16(tmp_path / "a.png", RAMP12, b"\x0c")) == 12
    assert png_significant_bits(write_png16(tmp_path / "b.png", RAMP12)) is None
    assert png_significant_bits(write_png16(tmp_path / "c.png", np.zeros((2, 2, 3), np.uint16), b"\x0a\x0c\x0a")) == 12
    ihdr = struct.pack(">IIBBBBB", 1, 1, 16, 6, 0, 0, 0)  # RGBA: the alpha's 16 bits do not count
    (tmp_path / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"sBIT", b"\x0a\x0a\x0a\x10"))
    assert png_significant_bits(tmp_path / "d.png") == 10
    (tmp_path / "e.tif").write_bytes(b"II*\x00")
    assert png_significant_bits(tmp_path / "e.tif") is None
    assert significant_top(np.array([0, 4095], np.uint16)) == 4095
    assert significant_top(np.array([0, 1000], np.uint16), 12) == 4095


def test_a_12_bit_annotation_is_binarised_at_half_its_range() -> None:
    assert binarise(np.array([[0, 4095, 2000, 2100]], np.uint16)).tolist() == [[False, True, False, True]]
    assert binarise(np.array([[0, 65535, 30000]], np.uint16)).tolist() == [[False, True, False]]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    array = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal(orient(array, orientation), expected)
