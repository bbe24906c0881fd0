"""``results.csv`` and the run's tally.

One row per input image, written and flushed as each image finishes, so an interrupted run
leaves a CSV whose every line is whole. Every run writes the same columns, ``COLUMNS``, with
or without ground truth, so the CSVs of several runs or shards concatenate: the groups below
in this order. Figures the image has not got (an error row, a run without ``--gt``, an image
without an annotation, an AUC of an annotation with no vessel) are empty cells.

``Report`` counts what a run did; the CLI's exit code is derived from it.
"""
from __future__ import annotations

import csv
import io
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..io.imageio import write_atomic

#: Which image: its name (path relative to its input root) and size after EXIF orientation.
IMAGE_COLUMNS = ("image", "width", "height")
#: What the input file says of itself (DICOM inputs; empty for other files): the eye (``L``/``R``)
#: and micrometres per pixel.
METADATA_COLUMNS = ("laterality", "pixel_size_um")
#: The mask inside the field of view.
MASK_COLUMNS = ("fov_pixels", "vessel_pixels", "vessel_density")
#: The mask's vessel morphology (``vesselcli.analysis.morphology``; mm and um with a pixel size).
MORPHOLOGY_COLUMNS = ("vessel_length_px", "mean_width_px", "branch_points", "end_points", "segments",
                      "tortuosity", "fractal_dimension", "vessel_length_mm", "mean_width_um")
COUNT_COLUMNS = ("branch_points", "end_points", "segments")  # whole numbers
#: The mask against the annotation, inside the FOV (with ``--gt``).
GT_COLUMNS = ("iou", "dice", "sensitivity", "specificity", "accuracy", "auc", "gt_mean_width_px", "width_ratio")
#: How the image went.
TAIL_COLUMNS = ("seconds", "status", "error")
#: The one header of every results.csv (groups that other issues add go in between, in the
#: README's order).
COLUMNS = IMAGE_COLUMNS + METADATA_COLUMNS + MASK_COLUMNS + MORPHOLOGY_COLUMNS + GT_COLUMNS + TAIL_COLUMNS
#: ``identifiers.csv`` (``--keep-identifiers``; a shard's ``parts/identifiers-I-of-N.csv``): the
#: one file of OUT holding patient identifiers, one row per DICOM image done.
IDENTIFIER_COLUMNS = ("image", "patient_name", "patient_id", "patient_birth_date", "accession_number",
                      "study_instance_uid", "series_instance_uid", "sop_instance_uid", "frame")


@dataclass(frozen=True)
class ImageResult:
    """What became of one image (``status`` ``ok`` or ``error``)."""

    image: str
    status: str
    seconds: float
    width: int | None = None
    height: int | None = None
    fov_pixels: int | None = None
    vessel_pixels: int | None = None
    figures: dict[str, float] | None = None  # GT_COLUMNS -> value, when ground truth was scored
    morphology: dict[str, float | None] | None = None  # MORPHOLOGY_COLUMNS -> value (None: not applicable)
    error: str = ""
    laterality: str | None = None  # "L" / "R" from a DICOM input's Image or Frame Laterality
    pixel_size_um: float | None = None  # micrometres per pixel from a DICOM input's Pixel Spacing

    @property
    def vessel_density(self) -> float | None:
        if self.vessel_pixels is None or not self.fov_pixels:
            return None
        return self.vessel_pixels / self.fov_pixels

    def row(self) -> dict[str, str]:
        """The CSV cells of this result, one per column of ``COLUMNS`` (empty where it has no figure)."""
        def number(value: float | None, digits: int = 6) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return ""
            return f"{value:.{digits}f}"

        cells = {
            "image": self.image,
            "width": "" if self.width is None else str(self.width),
            "height": "" if self.height is None else str(self.height),
            "laterality": self.laterality or "",
            "pixel_size_um": number(self.pixel_size_um, 4),
            "fov_pixels": "" if self.fov_pixels is None else str(self.fov_pixels),
            "vessel_pixels": "" if self.vessel_pixels is None else str(self.vessel_pixels),
            "vessel_density": number(self.vessel_density),
            "seconds": number(self.seconds, 3),
            "status": self.status,
            "error": " ".join(self.error.split()),  # one line, whatever the message held
        }
        for name in GT_COLUMNS:
            cells[name] = number((self.figures or {}).get(name))
        for name in MORPHOLOGY_COLUMNS:
            value = (self.morphology or {}).get(name)
            cells[name] = str(int(value)) if name in COUNT_COLUMNS and value is not None else number(value)
        return {name: cells[name] for name in COLUMNS}


#: Columns added to results.csv since its schema was fixed (2026-12-06: the width against the
#: annotation). A results file that lacks only these, in the same order otherwise, is an earlier
#: version's: it is read (those cells empty), so a run it started resumes and merges.
ADDED_COLUMNS = ("gt_mean_width_px", "width_ratio")


class CsvMismatchError(ValueError):
    """An existing results.csv is not one this version writes (other columns, or not ours)."""


def read_rows(path: Path, expected: tuple[str, ...] = COLUMNS) -> list[dict[str, str]]:
    """Rows of an existing results file; [] when there is none.

    A last line without its newline (a write cut short by a crash) is ignored, so is any row
    with the wrong number of cells. ``CsvMismatchError`` when the header differs from
    ``expected`` (a results.csv of an older vesselseg, whose columns depended on ``--gt``)
    other than by lacking ``ADDED_COLUMNS``, or the file is not a results file at all (not
    UTF-8, no header line).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    # Drop a last line cut short before decoding: the cut may fall inside a multi-byte character.
    # The header itself is written whole (atomically), so a file without one is someone else's.
    end = data.rfind(b"\n") + 1
    if data and not end:
        raise CsvMismatchError(f"{path} is not a vesselseg results file (it has no header line); pass "
                               "--overwrite to replace it or choose another --out")
    data = data[:end]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CsvMismatchError(
            f"{path} is not a vesselseg results file (it is not UTF-8 text); pass --overwrite to "
            "replace it or choose another --out"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    # An earlier version's file (it lacks only ADDED_COLUMNS) is read: its rows, without the
    # figures it did not measure.
    earlier = not extra and set(missing) <= set(ADDED_COLUMNS) and [c for c in expected if c in header] == header
    if tuple(header) != expected and not earlier:
        what = "; ".join(part for part in (
            f"it lacks {','.join(missing)}" if missing else "",
            f"it has {','.join(extra)} besides" if extra else "",
        ) if part) or "its columns are in another order"
        raise CsvMismatchError(
            f"{path} was not written by this version of vesselseg ({what}; this version writes "
            f"{','.join(expected)}); pass --overwrite to redo its images into the current columns "
            "or choose another --out"
        )
    return [dict(zip(header, cells)) for cells in reader if len(cells) == len(header)]


def _line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def rewrite_in_order(path: Path, names: list[str], header: tuple[str, ...] = COLUMNS) -> None:
    """Rewrite a results file atomically with its rows in the order of ``names``.

    Rows of images not in ``names`` (kept from an earlier run over other inputs) follow, in
    the order they had. Used when a run ends, so that the file does not depend on which
    worker finished first.
    """
    rows = read_rows(path, header)
    place = {name: i for i, name in enumerate(names)}
    rows.sort(key=lambda row: place.get(row["image"], len(place)))  # stable: the others keep their order
    write_rows(path, rows, header)


def write_rows(path: Path, rows: list[dict[str, str]], header: tuple[str, ...] = COLUMNS) -> None:
    """Write a whole results file (header, then ``rows``) atomically."""
    text = _line(list(header)) + "".join(_line([row.get(c, "") for c in header]) for row in rows)
    write_atomic(path, text.encode("utf-8", "backslashreplace"))


class ResultsWriter:
    """Appends rows to results.csv, one whole line per write, flushed at once; thread-safe.

    Opening rewrites the file atomically with the header and the ``kept`` rows of an earlier
    run (the rows of images this run redoes are dropped, so no image has two rows).
    """

    def __init__(self, path: Path, kept: list[dict[str, str]], header: tuple[str, ...] = COLUMNS) -> None:
        self.path = path
        self.header = header
        write_rows(path, kept, header)
        self._lock = threading.Lock()
        # Unbuffered: a write that fails (a full disk) leaves nothing behind in a buffer for a
        # later flush or ``close`` to retry, and its partial line can be taken back at once.
        self._file: BinaryIO = open(path, "ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size

    def append(self, result: ImageResult) -> None:
        """Write one whole row, or nothing: a failed write is cut back off and re-raised."""
        self.append_cells(result.row())

    def append_cells(self, cells: dict[str, str]) -> None:
        """``append`` for a row given as column -> text (missing columns empty)."""
        cells = {c: cells.get(c, "") for c in self.header}
        # An error message may quote a file name that is not UTF-8: escaped, never a crash.
        data = _line([cells[c] for c in self.header]).encode("utf-8", "backslashreplace")
        with self._lock:
            if self._file.closed:  # the run was aborted (a second Ctrl-C): the row is redone next time
                return
            try:
                done = 0
                while done < len(data):
                    done += self._file.write(data[done:])
            except OSError:
                try:
                    self._file.truncate(self._size)  # no torn row (truncating needs no space)
                except OSError:
                    pass
                raise
            self._size += len(data)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


@dataclass
class Report:
    """The tally of a run: images done, failed and skipped (already done before)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted_by: int | None = None  # the signal number that stopped the run
    fatal: str = ""  # why the run stopped early on its own (disk full, engine gone)
    densities: list[float] = field(default_factory=list, repr=False)
    ious: list[float] = field(default_factory=list, repr=False)
    dices: list[float] = field(default_factory=list, repr=False)
    width_ratios: list[float] = field(default_factory=list, repr=False)

    def add(self, result: ImageResult) -> None:
        figures = result.figures or {}
        self.count(result.status == "ok", result.vessel_density, figures.get("iou"), figures.get("dice"), figures.get("width_ratio"))

    def count(self, ok: bool, density: float | None = None, iou: float | None = None, dice: float | None = None,
              width_ratio: float | None = None) -> None:
        """The one tally rule (a run's results as they come, or a results file's rows when
        merging): a failed image counts as failed; an ``ok`` one as done, and each of its
        figures that it has (not None, not NaN) joins its mean."""
        if not ok:
            self.failed += 1
            return
        self.done += 1
        for values, value in ((self.densities, density), (self.ious, iou), (self.dices, dice), (self.width_ratios, width_ratio)):
            if value is not None and not math.isnan(value):
                values.append(value)

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed - self.skipped

    @staticmethod
    def _mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    @property
    def mean_density(self) -> float | None:
        return self._mean(self.densities)

    @property
    def mean_iou(self) -> float | None:
        return self._mean(self.ious)

    @property
    def mean_dice(self) -> float | None:
        return self._mean(self.dices)

    @property
    def mean_width_ratio(self) -> float | None:
        return self._mean(self.width_ratios)

    @property
    def exit_code(self) -> int:
        """0 every image succeeded; 1 some failed or the run stopped early; 128+N on signal N."""
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        if self.failed or self.fatal or self.remaining:
            return 1
        return 0
