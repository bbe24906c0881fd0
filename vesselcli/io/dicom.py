"""Reading DICOM photographs: what a file is, how many frames it holds, and one frame's pixels.

- ``looks_like_dicom(path)``: the 128-byte preamble followed by ``DICM`` (how PACS exports
  write files, often without an extension).
- ``inspect(path)`` -> ``DicomHeader``: reads the header only (no pixel data) and says whether
  the object is a photograph ``segment`` takes (Ophthalmic Photography 8/16 bit, VL
  Photographic, Secondary Capture, ...) and how many frames it has, or why it is skipped.
- ``read_frame(path, frame, max_pixels)`` -> ``DicomImage``: frame ``frame`` (0-based) as
  ``(H, W, 3) uint8 RGB`` with ``laterality`` and ``pixel_size_um``.

Patient identifiers are never copied into anything this module returns except
``DicomImage.identifiers``, which only ``--keep-identifiers`` writes out.

pydicom and its pixel-data plugins (pylibjpeg with libjpeg, openjpeg and RLE; pyjpegls for
JPEG-LS) are base dependencies, imported here on first use only.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .imageio import ImageReadError

#: Extensions (lower case) of DICOM files; files without one are recognised by their preamble.
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})

#: SOP classes holding photographs: ``segment`` reads these and skips every other object.
PHOTOGRAPH_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit",
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit",
    "1.2.840.10008.5.1.4.1.1.77.1.5.5": "Wide Field Ophthalmic Photography Stereographic Projection",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
}

#: Which pip package decodes which transfer syntax (for the message when it is missing).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}

#: JPEG Baseline is decoded with Pillow first (libjpeg-turbo, as OpenCV and most viewers
#: decode it), so a DICOM-wrapped JPEG gives the pixels an ordinary JPEG reader gives; the
#: IJG libjpeg of pylibjpeg rounds colour conversion and upsampling differently (up to 4
#: levels on 13% of DRIVE's values). Other syntaxes use whichever plugin pydicom finds.
_PREFERRED_PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow"}

#: The identifiers ``--keep-identifiers`` may write out; nothing else ever does.
IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")


@dataclass(frozen=True)
class DicomHeader:
    """What ``inspect`` found: ``frames`` >= 1 for a photograph, else 0 with ``skip`` saying why."""

    frames: int
    skip: str = ""


@dataclass(frozen=True)
class DicomImage:
    """One decoded frame: ``rgb`` ``(H, W, 3) uint8``; ``laterality`` ``"L"``/``"R"`` or None;
    ``pixel_size_um`` micrometres per pixel or None; ``identifiers`` keyword -> text (the
    patient's; written only with ``--keep-identifiers``) plus the study/series/instance UIDs."""

    rgb: np.ndarray
    laterality: str | None
    pixel_size_um: float | None
    identifiers: dict[str, str] = field(default_factory=dict, repr=False)


def looks_like_dicom(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with a 128-byte preamble and ``DICM`` (never raises, never
    blocks: only regular files are opened, as a pipe would wait for a writer for ever)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom_name(name: str) -> bool:
    """True for ``.dcm`` / ``.dicom`` names, any case."""
    return os.path.splitext(name)[1].lower() in DICOM_EXTENSIONS


def _read_header(path: Path):  # noqa: ANN202 - a pydicom Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except InvalidDicomError as exc:
        raise ImageReadError(f"not a readable DICOM file ({exc})") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(f"DICOM header is damaged or truncated ({exc})") from None


def inspect(path: str | os.PathLike[str]) -> DicomHeader:
    """Read the header of ``path`` (no pixel data) and classify it; ``ImageReadError`` when
    the header itself cannot be read (that image is then an error row)."""
    ds = _read_header(Path(path))
    meta = getattr(ds, "file_meta", None)
    # A DICOMDIR names its class only in the file meta information.
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""))
    has_pixels = "Rows" in ds and "Columns" in ds
    if sop_class and sop_class not in PHOTOGRAPH_CLASSES:
        import pydicom.uid

        name = pydicom.uid.UID(sop_class).name
        return DicomHeader(0, f"a {name} object, not a photograph (segment reads Ophthalmic Photography, "
                              "VL Photographic and Secondary Capture images)")
    if not has_pixels:
        if not sop_class and not looks_like_dicom(path):
            raise ImageReadError("not a readable DICOM file (no DICOM preamble, no SOP class, no image attributes)")
        return DicomHeader(0, "a DICOM object without an image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return DicomHeader(max(frames, 1))


def _laterality(ds) -> str | None:  # noqa: ANN001
    """``L``/``R`` from Image Laterality, else the first Frame Laterality, else series Laterality."""
    values = [ds.get("ImageLaterality")]
    for group in ds.get("SharedFunctionalGroupsSequence", []) or []:
        for item in group.get("FrameAnatomySequence", []) or []:
            values.append(item.get("FrameLaterality"))
    values.append(ds.get("Laterality"))
    for value in values:
        text = str(value or "").strip().upper()
        if text in ("L", "R"):
            return text
    return None


def _pixel_size_um(ds) -> float | None:  # noqa: ANN001
    """Micrometres per pixel from Pixel Spacing (top level or shared Pixel Measures).

    Pixel Spacing is (row spacing, column spacing) in mm. One size is only meaningful for
    square pixels: spacings that differ by more than 1% give None.
    """
    spacing = ds.get("PixelSpacing")
    if spacing is None:
        for group in ds.get("SharedFunctionalGroupsSequence", []) or []:
            for item in group.get("PixelMeasuresSequence", []) or []:
                spacing = spacing or item.get("PixelSpacing")
    try:
        rows_mm, cols_mm = (float(v) for v in spacing)
    except (TypeError, ValueError):
        return None
    if rows_mm <= 0 or cols_mm <= 0 or abs(rows_mm - cols_mm) > 0.01 * max(rows_mm, cols_mm):
        return None
    return (rows_mm + cols_mm) / 2 * 1000.0


def _identifiers(ds) -> dict[str, str]:  # noqa: ANN001
    keep = {k: str(ds.get(k, "") or "") for k in IDENTIFIER_KEYWORDS}
    for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        keep[k] = str(ds.get(k, "") or "")
    return keep


def _syntax(ds) -> str:  # noqa: ANN001
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _decode(path: Path, frame: int, syntax: str) -> np.ndarray:
    """Frame ``frame`` of the file, read from the file alone (not every frame into memory)."""
    from pydicom.pixels import pixel_array

    preferred = _PREFERRED_PLUGIN.get(syntax, "")
    if preferred:
        try:
            return pixel_array(str(path), index=frame, decoding_plugin=preferred)
        except Exception:  # noqa: BLE001 - e.g. Pillow cannot read this stream: let pydicom choose
            pass
    return pixel_array(str(path), index=frame)


def _decode_error(exc: Exception, syntax: str) -> ImageReadError:
    text = " ".join(str(exc).split())
    if "no pixel data to decode" in text.lower():
        return ImageReadError("the DICOM object has no pixel data (damaged, or not an image)")
    if "raised by all available plugins" in text.lower():
        # Decoders are installed and each refused this stream: naming a package to install would mislead.
        return ImageReadError(f"DICOM pixel data could not be decoded by any installed decoder: damaged, or a "
                              f"variant of its transfer syntax they do not read ({text})")
    if "plugin" in text.lower() or "missing dependencies" in text.lower() or "no pixel data decoders" in text.lower():
        import pydicom.uid

        name = pydicom.uid.UID(syntax).name if syntax else "unknown"
        package = _DECODER_PACKAGES.get(syntax)
        fix = (f"install its decoder: pip install {package.split(' ')[0]}" if package
               else "no decoder for it is available; convert the file to an uncompressed or JPEG syntax")
        return ImageReadError(f"no decoder for its transfer syntax {name} ({syntax}) is installed; {fix}")
    return ImageReadError(f"DICOM pixel data is damaged or truncated ({text})")


def _palette_rgb(pixels: np.ndarray, ds) -> tuple[np.ndarray, int]:  # noqa: ANN001
    """PALETTE COLOR indices -> (``(H, W, 3)`` RGB through the file's lookup tables, bits per entry)."""
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as exc:  # noqa: BLE001 - missing or malformed tables
        raise ImageReadError(f"PALETTE COLOR image whose colour lookup tables cannot be applied ({' '.join(str(exc).split())})") from None
    return rgb, bits if bits in (8, 16) else 16


def _to_rgb(pixels: np.ndarray, ds) -> np.ndarray:  # noqa: ANN001
    """Decoded pixels -> ``(H, W, 3) uint8``: scaled from Bits Stored (or a palette's bits per
    entry) to 8 bits, PALETTE COLOR through its lookup tables, MONOCHROME1 inverted."""
    bits = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR" and pixels.ndim == 2:
        pixels, bits = _palette_rgb(pixels, ds)
    if pixels.dtype != np.uint8 or bits < 8:
        top = float((1 << bits) - 1)
        values = pixels.astype(np.float64)
        if np.issubdtype(pixels.dtype, np.signedinteger):
            values -= float(pixels.min(initial=0))
        pixels = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            pixels = 255 - pixels
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageReadError(f"unexpected DICOM pixel layout {pixels.shape} (photometric interpretation "
                             f"{ds.get('PhotometricInterpretation', '?')}); expected RGB, YBR or MONOCHROME")
    return np.ascontiguousarray(pixels)


def read_frame(path: str | os.PathLike[str], frame: int, max_pixels: int) -> DicomImage:
    """Frame ``frame`` (0-based) of a DICOM photograph; ``ImageReadError`` with a readable message.

    The header is read first and the size checked against ``max_pixels`` before any pixel
    data is read; then only that frame is read and decoded.
    """
    path = Path(path)
    ds = _read_header(path)
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError("not a readable DICOM image: it has no Rows/Columns (not DICOM, or damaged)")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * columns > max_pixels:
        raise ImageReadError(f"image is {columns}x{rows} = {rows * columns:,} pixels, above the limit of "
                             f"{max_pixels:,}; raise --max-pixels if this image is genuine")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise ImageReadError(f"frame {frame + 1} asked for, but the object has {frames} frame(s)")
    syntax = _syntax(ds)
    try:
        pixels = _decode(path, frame, syntax)
    except Exception as exc:  # noqa: BLE001 - decoders raise ValueError, RuntimeError, OSError ...
        raise _decode_error(exc, syntax) from None
    return DicomImage(_to_rgb(pixels, ds), _laterality(ds), _pixel_size_um(ds), _identifiers(ds))
