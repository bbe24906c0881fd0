"""Reading and writing images: the only module that touches image files on disk.

Everything returned is a plain numpy array in a fixed layout, so the rest of the
pipeline never has to care which format, bit depth or orientation a file had:

- ``read_image`` -> ``(H, W, 3) uint8 RGB`` (grey, RGBA, palette and 16-bit are converted;
  EXIF orientation is applied). 16-bit data is scaled by its real bit depth
  (``significant_top``): a 12-bit camera export in a 16-bit file keeps its levels.
- ``read_mask`` -> ``(H, W) bool`` (0/255, 0/1, 1-bit, palette GIFs via their palette, 16-bit).

Writes go to a temporary name in the destination folder and are renamed into place, so an
interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import os
import stat
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Extensions (lower case) that are treated as images when scanning folders.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".webp"}
)

#: Default refusal limit for decoded pixels (about 16k x 16k); configurable per call.
DEFAULT_MAX_PIXELS = 268_000_000

# The process umask, read once at import (reading it means setting it, which is not safe
# while other threads create files): files written atomically get the usual 0o666 & ~umask.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ImageReadError(ValueError):
    """A file could not be read as an image; the message is meant for a person."""


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily and refuse it before decoding when it is too large."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageReadError(f"broken symbolic link: its target {os.readlink(path)} does not exist") from None
        raise ImageReadError("file not found (moved or deleted since the run started?)") from None
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):  # a pipe would block the reader for ever
        raise ImageReadError("not a regular file (a pipe, socket or device); give image files")
    if st.st_size == 0:
        raise ImageReadError("file is empty (0 bytes)")
    # Pillow's own bomb guard is switched off on purpose: the header check below refuses
    # the same images before decoding, with a message naming our limit and its option.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(path)
    except PermissionError:
        raise ImageReadError("permission denied: the file cannot be opened for reading; check its permissions") from None
    except UnidentifiedImageError:
        raise ImageReadError(
            "not a readable image: its contents are in no format vesselseg reads (PNG, JPEG, TIFF, BMP, GIF, "
            "PPM/PGM, WebP); is it another kind of file with an image extension?"
        ) from None
    except OSError as exc:
        raise ImageReadError(f"not a readable image: its header is damaged or truncated ({exc})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageReadError(
            f"image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,}; raise --max-pixels if this image is genuine"
        )
    if width < 1 or height < 1:
        raise ImageReadError(f"image has no pixels ({width}x{height})")
    return img


def _decode(img: Image.Image, path: Path) -> Image.Image:
    try:
        img.load()
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"image data is damaged or truncated ({exc})") from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_significant_bits(path: Path) -> int | None:
    """The PNG ``sBIT`` chunk's significant bits (the largest over the colour channels, alpha
    left out), or None when the file is not a PNG or has no valid sBIT before its image data.

    Reads only the chunk headers before the first ``IDAT``.
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                return None
            colour_type = None
            while True:
                head = handle.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND") or length > 1 << 24:
                    return None
                data = handle.read(length) if kind in (b"IHDR", b"sBIT") else None
                if data is None:
                    handle.seek(length, os.SEEK_CUR)
                elif kind == b"IHDR" and length >= 10:
                    colour_type = data[9]
                elif kind == b"sBIT" and 1 <= length <= 4:
                    colour = data[:1] if colour_type == 4 else data[:3] if colour_type == 6 else data
                    bits = max(colour)
                    return bits if 1 <= bits <= 16 else None
                handle.seek(4, os.SEEK_CUR)  # the chunk's CRC
    except OSError:
        return None


def significant_top(array: np.ndarray, significant_bits: int | None = None) -> int:
    """The sample value that means full brightness in integer image data (16-bit, int32).

    With the PNG ``sBIT`` bits ``b``: ``2**b - 1`` when no sample exceeds it (a 12-bit camera
    export stored as is), else 65535 (the PNG specification's way: samples scaled up to the
    full 16-bit range). Without: ``2**n - 1`` for the bit length ``n`` of the largest sample, at
    least 8 bits (so 0..4095 data is 12-bit, 0..255 data in a 16-bit file is 8-bit).
    """
    largest = int(array.max(initial=0))
    if significant_bits is not None:
        top = (1 << significant_bits) - 1
        return top if largest <= top else max(65535, (1 << largest.bit_length()) - 1)
    return (1 << max(8, largest.bit_length())) - 1


def _to_uint8(array: np.ndarray, significant_bits: int | None = None) -> np.ndarray:
    """Scale 16-bit (or int32 / float) data to uint8: integers by ``significant_top``."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if float(np.nanmax(array)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(array) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    top = significant_top(array, significant_bits)
    return np.clip(array.astype(np.float64) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)


def _is_16bit_colour(img: Image.Image) -> bool:
    """A colour image whose file holds 16 bits per channel (Pillow would keep only the high byte)."""
    if img.mode not in ("RGB", "RGBA") or not img.tile:
        return False
    args = img.tile[0][3] if len(img.tile[0]) > 3 else None
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return isinstance(rawmode, str) and ";16" in rawmode


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W[, C])`` as displayed under EXIF orientation 1-8 (what ``ImageOps.exif_transpose`` does)."""
    turn = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return array if turn is None else np.ascontiguousarray(turn(array))


def _read_16bit_colour(img: Image.Image, path: Path) -> np.ndarray | None:
    """``(H, W, 3) uint8 RGB`` of a 16-bit colour file, scaled by its bit depth; None when
    OpenCV cannot decode it (the caller falls back to Pillow's 8 bits)."""
    import cv2

    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block means no rotation
        orientation = 1
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[2] not in (3, 4):
        return None
    rgb = bgr[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    return orient(_to_uint8(rgb, png_significant_bits(path)), orientation)


def image_size(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image as it will be decoded (EXIF rotation included)."""
    img = _open(Path(path), max_pixels)
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no rotation
        orientation = 1
    w, h = img.size
    img.close()
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photograph as ``(H, W, 3) uint8 RGB``.

    Grey images are replicated to three channels, alpha is dropped, palettes are applied and
    16-bit data (grey or colour) is scaled to 8 bits by its real bit depth
    (``significant_top``). Raises ``ImageReadError`` with a readable message.
    """
    path = Path(path)
    img = _open(path, max_pixels)
    if _is_16bit_colour(img):
        rgb = _read_16bit_colour(img, path)
        if rgb is not None:
            img.close()
            return rgb
    img = _decode(img, path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _to_uint8(np.asarray(img), png_significant_bits(path))
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    array = np.asarray(img)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageReadError(f"unexpected pixel layout {array.shape}")
    return np.ascontiguousarray(array)


def read_grey(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as ``(H, W)`` with its native depth (uint8 or uint16), palettes applied.

    Used for annotations and probability maps, where the values matter, not the colours.
    """
    path = Path(path)
    img = _decode(_open(path, max_pixels), path)
    if img.mode == "1":
        return np.asarray(img, dtype=bool).astype(np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.uint16)
    if img.mode == "I":
        array = np.asarray(img)
        return np.clip(array, 0, 65535).astype(np.uint16)
    if img.mode == "F":
        return _to_uint8(np.asarray(img))
    # Palette images are converted through their palette: CHASE_DB1's FOV GIFs store the
    # field of view as index 0 with a white palette entry, DRIVE's 2nd_manual the reverse.
    return np.asarray(img.convert("L"))


def binarise(grey: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8/uint16 -> bool: label images (max value <= 1) by ``> 0``, else above half
    range: 127 for 8-bit data, half of ``significant_top`` for 16-bit (32767; 2047 for 12-bit)."""
    top = int(grey.max(initial=0))
    if top <= 1:
        return grey > 0
    half = significant_top(grey) // 2 if grey.dtype == np.uint16 and top > 255 else 127
    return grey > half


def read_mask(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a binary annotation or FOV mask as ``(H, W) bool``."""
    return binarise(read_grey(path, max_pixels))


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes the file private (0o600); outputs are read like any other new file.
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def encode_png(array: np.ndarray) -> bytes:
    """``(H, W)`` uint8 or ``(H, W, 3)`` uint8 RGB -> PNG bytes."""
    import cv2

    if array.ndim == 3:
        array = array[..., ::-1]
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("JPEG encoding failed")
    return buf.tobytes()
