"""DICOM test files made from ordinary photographs: Ophthalmic Photography objects in every
transfer syntax ``segment`` reads, and broken ones.

Every object carries the same made-up patient (``IDENTIFIERS``), so a test can look for those
strings in whatever a run writes.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

#: The made-up patient of every test object; none of these may appear in OUT.
IDENTIFIERS = {
    "PatientName": "Fundus^Margarethe^Quintessa",
    "PatientID": "PID-93847561",
    "PatientBirthDate": "19470312",
    "AccessionNumber": "ACC-55102938",
}

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
OP_16BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1002"


def _base(sop_class: str, sop_instance: str, rows: int, columns: int) -> "pydicom.Dataset":  # noqa: F821
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "1"
    ds.StudyDate = "20240105"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = ""
    ds.Modality = "OP"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "vesselseg tests"
    ds.ContentDate = "20240105"
    ds.ContentTime = "101500"
    ds.Rows = rows
    ds.Columns = columns
    return ds


def photograph(
    rgb: np.ndarray,
    sop_instance: str,
    *,
    frames: list[np.ndarray] | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    laterality: str | None = None,
) -> "pydicom.Dataset":  # noqa: F821
    """An uncompressed Ophthalmic Photography 8 Bit object of ``(H, W, 3) uint8 RGB`` pixels.

    ``frames`` (each ``(H, W, 3) uint8``) makes a multi-frame object instead of ``rgb`` alone.
    """
    pixels = np.stack(frames) if frames else rgb
    rows, columns = pixels.shape[-3:-1]
    ds = _base(OP_8BIT, sop_instance, rows, columns)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = len(frames) if frames else 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing_mm]
    if laterality is not None:
        ds.ImageLaterality = laterality
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def photograph_16bit(grey: np.ndarray, sop_instance: str, bits_stored: int = 12) -> "pydicom.Dataset":  # noqa: F821
    """An Ophthalmic Photography 16 Bit MONOCHROME2 object of ``(H, W) uint16`` pixels."""
    ds = _base(OP_16BIT, sop_instance, *grey.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = 1
    ds.PixelData = np.ascontiguousarray(grey.astype(np.uint16)).tobytes()
    return ds


def compressed(ds: "pydicom.Dataset", syntax: str) -> "pydicom.Dataset":  # noqa: F821
    """``ds`` re-encoded losslessly: ``rle``, ``jpeg2000`` (lossless), ``jpegls`` (lossless)."""
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    uid = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless, "jpegls": JPEGLSLossless}[syntax]
    ds.compress(uid, generate_instance_uid=False)
    return ds


def jpeg_baseline(rgb: np.ndarray, sop_instance: str, quality: int = 92) -> tuple["pydicom.Dataset", bytes]:  # noqa: F821
    """A JPEG Baseline (lossy) object, YBR_FULL_422, and the JPEG stream it encapsulates.

    The stream is made by Pillow with 4:2:2 chroma subsampling, as cameras write it, so a
    test can decode the same bytes independently of pydicom.
    """
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=1)
    stream = buffer.getvalue()
    ds = photograph(rgb[:1, :1], sop_instance)  # the attributes; the pixels follow
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    return ds, stream


def report_object(sop_instance: str) -> "pydicom.Dataset":  # noqa: F821
    """A Basic Text SR document: a DICOM object with no image."""
    ds = _base(BASIC_TEXT_SR, sop_instance, 1, 1)
    del ds.Rows, ds.Columns
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    return ds


def save(ds: "pydicom.Dataset", path: Path) -> Path:  # noqa: F821
    """Write ``ds`` as a DICOM file (128-byte preamble + ``DICM``) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def truncated(path: Path, keep: float = 0.5) -> Path:
    """Cut the file at ``path`` in place, keeping the first ``keep`` fraction of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
