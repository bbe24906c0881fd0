"""A vessel mask as a DICOM Segmentation object a PACS can file with the photograph's study.

``segmentation_bytes(source, frame, mask)`` builds, with highdicom, one binary Segmentation
(``(H, W) bool`` mask of frame ``frame`` of the DICOM file ``source``) with one segment:

- label ``retinal blood vessel``; category SCT 91723000 "Anatomical Structure"; type SCT
  59820001 "Blood vessel" with anatomic region SCT 5665001 "Retina"; algorithm: automatic,
  vesselseg and its version.
- references to the source's study, series and SOP instance (and its frame for multi-frame
  photographs); patient and study identity copied from the source, as the standard requires
  (the one place in OUT where they appear).

Written by the pipeline atomically to ``OUT/dicom-seg/<name>.dcm``. highdicom is the ``dicom``
extra (``pip install 'vesselseg[dicom]'``); ``require_highdicom`` says so before a run starts.
"""
from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np

from .. import __version__

SEGMENT_LABEL = "retinal blood vessel"
#: The SEG series number (one series per run would need a run-wide UID; each object gets its own).
SERIES_NUMBER = 900


class MissingExtraError(RuntimeError):
    """``--dicom-seg`` without highdicom installed."""


def require_highdicom() -> None:
    """``MissingExtraError`` with the install command when highdicom cannot be imported."""
    try:
        import highdicom  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"--dicom-seg needs highdicom, which is not installed ({exc}); install it with "
            "pip install 'vesselseg[dicom]'"
        ) from None


def _segmentation_class():  # noqa: ANN202 - a highdicom Segmentation subclass
    import highdicom as hd

    class PhotographSegmentation(hd.seg.Segmentation):
        """highdicom's Segmentation, taking photographs whose IOD allows several frames but
        which carry no functional groups (Ophthalmic Photography, VL Photographic): highdicom
        looks for their pixel measures in a Shared Functional Groups Sequence they do not have.
        Such a source is treated as the single image it is (its Pixel Spacing, if any, is used)."""

        @staticmethod
        def _get_pixel_measures_sequence(source_image, is_multiframe, coordinate_system):  # noqa: ANN001, ANN205
            if is_multiframe and "SharedFunctionalGroupsSequence" not in source_image:
                is_multiframe = False
            return hd.seg.Segmentation._get_pixel_measures_sequence(source_image, is_multiframe, coordinate_system)

    return PhotographSegmentation


def _description():  # noqa: ANN202
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=Code("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=Code("59820001", "SCT", "Blood vessel"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="vesselseg", version=__version__, family=codes.cid7162.ArtificialIntelligence
        ),
        anatomic_regions=[Code("5665001", "SCT", "Retina")],
    )


def segmentation_bytes(source: str | os.PathLike[str], frame: int, mask: np.ndarray) -> bytes:
    """The DICOM Segmentation of ``mask`` (``(H, W) bool``) over frame ``frame`` (0-based) of
    the photograph in ``source``, as the bytes of a DICOM file (Explicit VR Little Endian)."""
    import highdicom as hd
    import pydicom

    header = pydicom.dcmread(Path(source), stop_before_pixels=True, force=True)
    if (int(header.Rows), int(header.Columns)) != mask.shape:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the DICOM image is "
                         f"{header.Columns}x{header.Rows}")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    view = header
    if frames > 1:
        # highdicom takes one frame of a source without a patient coordinate system; the
        # segmentation covers frame ``frame`` only, so it is given the source as that one frame
        # and its references then name the frame.
        view = copy.deepcopy(header)
        view.NumberOfFrames = 1
    seg = _segmentation_class()(
        source_images=[view],
        pixel_array=mask[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description()],
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="vesselseg",
        manufacturer_model_name="vesselseg",
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=False,
    )
    # General Image: Patient Orientation is required (may be empty) for images without a patient
    # coordinate system, which photographs have not.
    seg.PatientOrientation = header.get("PatientOrientation", "")
    if frames > 1:
        _reference_frame(seg, frame + 1)
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _reference_frame(seg, number: int) -> None:  # noqa: ANN001
    """Point the segmentation's source references at frame ``number`` (1-based) of the source."""
    for group in seg.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in group.get("DerivationImageSequence", []):
            for item in derivation.get("SourceImageSequence", []):
                item.ReferencedFrameNumber = number
    for item in seg.get("SourceImageSequence", []):
        item.ReferencedFrameNumber = number
