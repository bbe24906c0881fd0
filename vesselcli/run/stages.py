"""The per-image stages of ``segment``, as plain functions the pipeline's threads call.

1. ``load``: read the image (EXIF orientation applied; DICOM photographs through
   ``vesselcli.io.dicom``, with their laterality and pixel size), its annotation and FOV mask if any,
   detect the FOV otherwise, and ``prepare`` the network input at the model's scale.
1b. ``rescale`` (``--scale-rule calibre`` only): when the vessels of a first look through the
   engine are wider than the model draws them, a new input at the scale that fixes that.
2. (the pipeline tiles the input through the engine: a probability map at model scale)
3. ``finish``: bring the probability back to the image's size, threshold it, keep it inside
   the FOV, measure its morphology (``vesselcli.analysis.morphology``) and measure it
   (inside the FOV) against the annotation.
4. ``write``: encode and write the mask, overlay, probability map and (``--dicom-seg``,
   DICOM inputs) the DICOM Segmentation atomically (the map as
   ``probability_levels``: 0 outside the FOV, and ``level / 255 >= threshold`` exactly where
   the mask is a vessel).

Every error a person can act on is raised as ``StageError`` with a one-line message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis import metrics
from ..analysis.morphology import morphology, width_against
from ..imaging.calibre import first_factor, next_factor
from ..io.discover import Item, LinkedOutputError, OutputPaths
from ..imaging.fov import detect_fov
from ..io.imageio import ImageReadError, encode_jpeg, encode_png, read_image, read_mask, write_atomic
from ..io.dicom import read_frame
from ..analysis.overlay import overlay
from ..imaging.preprocess import Preprocessing, fov_box, prepare_at, resize_image, scale_factor
from .report import GT_COLUMNS, ImageResult


class StageError(ValueError):
    """One image cannot be segmented; the message is one line for a person."""


@dataclass
class Job:
    """One image on its way through the pipeline.

    ``rgb``: ``(H, W, 3) uint8`` (only the overlay needs it); ``fov`` and ``truth``: ``(H, W) bool``; ``network_input``:
    ``(1, bh, bw) float32`` at model scale, cropped to the FOV's box (dropped once tiled);
    ``box``: that box ``(top, left, bh, bw)`` inside the ``model_shape`` ``(h, w)`` image at model
    scale; ``probability``: ``(H, W) float32`` once predicted; ``started``:
    ``time.perf_counter()`` when reading began.
    ``laterality`` (``L``/``R``) and ``pixel_size_um`` come from a DICOM input's header (None
    otherwise) and travel with the image to every later stage; ``identifiers`` (patient name,
    ID, birth date, accession number, study/series/instance UIDs) likewise, written out only
    with ``--keep-identifiers``.
    ``factor``: the processing scale (model pixels per original pixel) of ``network_input``;
    ``model_fov``: ``(h, w) bool``, the FOV at that scale.
    """

    item: Item
    started: float
    rgb: np.ndarray | None  # None once dropped (no overlay wanted)
    fov: np.ndarray
    truth: np.ndarray | None
    network_input: np.ndarray | None
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    model_shape: tuple[int, int] = (0, 0)
    probability: np.ndarray | None = None
    laterality: str | None = None
    pixel_size_um: float | None = None
    identifiers: dict[str, str] | None = None
    factor: float = 1.0
    model_fov: np.ndarray | None = None
    first_look: bool = False  # the calibre rule checks the vessels found at ``factor``


@dataclass(frozen=True)
class Partners:
    """Annotation and FOV files paired with an image (None when it has none)."""

    truth: Path | None = None
    fov: Path | None = None
    error: str = ""  # an ambiguous pairing: the image fails with this message


def _size_text(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _read_partner(path: Path, shape: tuple[int, int], what: str, max_pixels: int) -> np.ndarray:
    try:
        mask = read_mask(path, max_pixels)
    except ImageReadError as exc:
        raise StageError(f"{what} {path.name}: {exc}") from None
    if mask.shape != shape:
        raise StageError(
            f"{what} {path.name} is {_size_text(mask.shape)} but the image is {_size_text(shape)}; "
            f"each image needs its {what} at its own size"
        )
    return mask


def load(item: Item, partners: Partners, pre: Preprocessing, max_pixels: int, align: int = 8,
         scale_rule: str = "fov") -> Job:
    """Read and prepare one image at the scale ``scale_rule`` starts from; ``StageError`` when it
    cannot be. With "calibre", ``job.first_look`` says whether that scale is to be checked.

    ``align``: the model's tile multiple; the FOV's box starts on that grid (see ``fov_box``).
    """
    started = time.perf_counter()
    if partners.error:
        raise StageError(partners.error)
    laterality = pixel_size_um = identifiers = None
    try:
        if item.frame is None:
            rgb = read_image(item.path, max_pixels)
        else:
            dicom = read_frame(item.path, item.frame, max_pixels)
            rgb, laterality, pixel_size_um, identifiers = dicom.rgb, dicom.laterality, dicom.pixel_size_um, dicom.identifiers
    except ImageReadError as exc:
        raise StageError(str(exc)) from None
    shape = rgb.shape[:2]
    truth = _read_partner(partners.truth, shape, "annotation", max_pixels) if partners.truth else None
    fov = _read_partner(partners.fov, shape, "FOV mask", max_pixels) if partners.fov else detect_fov(rgb)
    factor, look = scale_factor(fov, pre), False
    if scale_rule == "calibre":
        factor, look = first_factor(factor)
    network_input, model_fov = prepare_at(rgb, fov, pre, factor)
    if not network_input.any():
        # One flat value everywhere (a black frame, a failed capture): the network would see an
        # all-zero input, on which it calls almost everything a vessel.
        raise StageError(f"the image is blank (one flat {pre.channel} level inside its field of view); "
                         "there is nothing to segment: check the capture")
    cropped, box = crop_to_fov(network_input, model_fov, align)
    return Job(item, started, rgb, fov, truth, cropped, box=box, model_shape=model_fov.shape,
               laterality=laterality, pixel_size_um=pixel_size_um, identifiers=identifiers,
               factor=factor, model_fov=model_fov, first_look=look)


def crop_to_fov(network_input: np.ndarray, model_fov: np.ndarray, align: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``(1, h, w)`` network input -> (its FOV box ``(1, bh, bw)``, the box ``(top, left, bh, bw)``).

    Only the FOV's box goes through the network: outside it nothing is a vessel, and the input
    there is zero, as the network's own zero padding is.
    """
    top, left, bh, bw = box = fov_box(model_fov, align)
    return np.ascontiguousarray(network_input[:, top : top + bh, left : left + bw]), box


def uncrop(box_probability: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """``(bh, bw)`` probability of the FOV's box -> ``(h, w) float32`` at model scale, 0 outside the box."""
    top, left, bh, bw = box
    if (top, left, bh, bw) == (0, 0, *shape):
        return box_probability.astype(np.float32, copy=False)
    full = np.zeros(shape, dtype=np.float32)
    full[top : top + bh, left : left + bw] = box_probability
    return full


def rescale(job: Job, first_look: np.ndarray, pre: Preprocessing, threshold: float, align: int = 8) -> np.ndarray | None:
    """The calibre rule's check: the network input (cropped to its FOV box) at the scale that
    gives the vessels the model's calibre, or None when the first look is the answer
    (``calibre.next_factor``).

    ``first_look``: ``(bh, bw) float32`` probability of the job's FOV box at ``job.factor``.
    Updates ``job.factor``, ``job.model_fov``, ``job.box`` and ``job.model_shape`` when it
    rescales; ``job.rgb`` must still be there.
    """
    probability = uncrop(first_look, job.box, job.model_shape)
    factor = next_factor((probability >= threshold) & job.model_fov, job.factor)
    if factor is None:
        return None
    network_input, job.model_fov = prepare_at(job.rgb, job.fov, pre, factor)
    job.factor = factor
    job.model_shape = job.model_fov.shape
    cropped, job.box = crop_to_fov(network_input, job.model_fov, align)
    return cropped


def finish(job: Job, model_probability: np.ndarray, threshold: float,
           pixel_size_um: float | None = None) -> tuple[np.ndarray, ImageResult]:
    """Probability of the FOV's box at model scale ``(bh, bw) float32`` -> (mask ``(H, W) bool``, result row).

    ``pixel_size_um``: micrometres per pixel of this image (from its metadata, else
    ``--pixel-size``), for the morphology figures in mm and um; None leaves them empty.
    Also stores the original-size probability in ``job.probability``.
    """
    height, width = job.fov.shape
    model_probability = uncrop(model_probability, job.box, job.model_shape)
    probability = np.clip(resize_image(model_probability, (height, width)), 0.0, 1.0)
    job.probability = probability
    mask = (probability >= threshold) & job.fov
    shape = morphology(mask, job.fov, pixel_size_um)
    figures = None
    if job.truth is not None:
        counts = metrics.confusion(mask, job.truth, job.fov)
        summary = metrics.summary(counts)
        figures = {name: summary[name] for name in GT_COLUMNS if name in summary}
        figures["auc"] = metrics.roc_auc(probability, job.truth, job.fov)
        figures.update(width_against(shape["mean_width_px"], job.truth, job.fov))
    result = ImageResult(
        image=job.item.name,
        status="ok",
        seconds=0.0,
        width=width,
        height=height,
        fov_pixels=int(np.count_nonzero(job.fov)),
        vessel_pixels=int(np.count_nonzero(mask)),
        figures=figures,
        laterality=job.laterality,
        pixel_size_um=pixel_size_um,
        morphology=shape,
    )
    return mask, result


def first_vessel_level(threshold: float) -> int:
    """The lowest 8-bit level ``k`` with ``k / 255 >= threshold`` (in float64), for 0 < threshold < 1."""
    level = min(255, max(1, int(np.ceil(threshold * 255.0))))
    while level > 1 and (level - 1) / 255.0 >= threshold:  # ceil of a product rounded up
        level -= 1
    while level < 255 and level / 255.0 < threshold:  # ... or down
        level += 1
    return level


def probability_levels(probability: np.ndarray, mask: np.ndarray, fov: np.ndarray, threshold: float) -> np.ndarray:
    """The saved probability map: ``(H, W) float32`` in [0, 1] -> ``(H, W) uint8`` levels.

    ``level = round(255 x probability)`` inside ``fov`` (``(H, W) bool``) and 0 outside, then
    moved by at most one level where rounding crossed the threshold, so that the rule
    ``level / 255 >= threshold`` (``vesselseg score``'s, in float64) gives exactly ``mask``
    (``(H, W) bool``, ``probability >= threshold`` inside the FOV): a vessel pixel below the
    first vessel level is raised to it, any other pixel at or above it is lowered to the level
    under it. 0 is below every threshold, so nothing outside the FOV is a vessel.
    """
    levels = np.clip(np.floor(probability * np.float32(255.0) + np.float32(0.5)), 0, 255).astype(np.uint8)
    levels[~fov] = 0
    first = first_vessel_level(threshold)
    called = levels >= first
    levels[mask & ~called] = first
    levels[~mask & called] = first - 1
    return levels


def write(job: Job, mask: np.ndarray, paths: OutputPaths, overlays: bool, probabilities: bool,
          threshold: float, dicom_seg: bool = False) -> None:
    """Write the mask (0/255 PNG), the overlay (JPEG), the probability map (8-bit PNG) and, for
    DICOM inputs with ``dicom_seg``, the DICOM Segmentation (``OUT/dicom-seg/<name>.dcm``).

    The map is ``probability_levels`` of the probability at ``threshold`` (the one the mask used).
    """
    key = job.item.key
    _write_inside(paths, paths.mask(key), encode_png(mask.astype(np.uint8) * 255))
    if overlays and job.rgb is not None:
        _write_inside(paths, paths.overlay(key), encode_jpeg(overlay(job.rgb, mask, job.fov, job.truth)))
    if probabilities and job.probability is not None:
        levels = probability_levels(job.probability, mask, job.fov, threshold)
        _write_inside(paths, paths.probability(key), encode_png(levels))
    if dicom_seg and job.item.frame is not None:
        from ..io.dicom_seg import segmentation_bytes

        _write_inside(paths, paths.dicom_seg(key), segmentation_bytes(job.item.path, job.item.frame, mask))


def _write_inside(paths: OutputPaths, path: Path, data: bytes) -> None:
    """Write atomically, through no symbolic link inside OUT (``StageError`` naming the link)."""
    try:
        paths.make_folders(path)
    except LinkedOutputError as exc:
        raise StageError(str(exc)) from None
    write_atomic(path, data)


def error_result(item: Item, message: str, started: float | None = None) -> ImageResult:
    """The ``error`` row of an image."""
    seconds = time.perf_counter() - started if started is not None else 0.0
    return ImageResult(image=item.name, status="error", seconds=seconds, error=message)
