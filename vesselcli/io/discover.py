"""Finding the input images and naming their outputs, so that no two collide and none escape OUT.

``discover`` walks files and folders (recursively, following symbolic links once, skipping
hidden names) in a deterministic order. ``assign_names`` gives every image

- ``name``: its path relative to its input root (a folder given on the command line, or the
  folder of a file given directly), in POSIX form; this is the CSV's ``image`` column. Bytes
  of a file name that are not UTF-8 and control characters (a newline, an escape) are
  written as ``\\xNN`` (``caf\\xe9.tif``), so the column is valid UTF-8, one line. When
  two roots hold the same relative path, the later ones get ``~2``, ``~3`` ... before the
  extension, so the column identifies one image.
- ``key``: the output path without extension. Normally ``name`` without its extension
  (``sub/01_test.tif`` -> ``sub/01_test``); when several images share that (``a.tif`` and
  ``a.png`` in one folder), each keeps its full name (``a.tif``, ``a.png``), and any
  remaining clash gets ``~2``, ``~3`` ... Comparisons ignore case, so the names stay
  distinct on case-insensitive file systems too.

DICOM files (``.dcm``/``.dicom``, or any name without an extension whose content starts with
the 128-byte preamble and ``DICM``) are found too; ``expand_dicom`` turns a multi-frame one into
one source per frame (``a.dcm`` -> ``a_f1.dcm``, ``a_f2.dcm``, so keys ``a_f1``, ``a_f2``) and
leaves out objects that are not photographs.

``OutputPaths`` maps a key to ``OUT/masks/<key>.png``, ``OUT/overlays/<key>.jpg``,
``OUT/probabilities/<key>.png`` and ``OUT/dicom-seg/<key>.dcm`` and refuses any key that could leave OUT. Symbolic links
inside OUT are never followed when writing: ``linked_outputs`` finds one planted where an
output folder or file of OUT goes (the run is refused), ``OutputPaths.make_folders`` refuses one
at a sub-folder (that image fails), and files are renamed into place, which replaces a link
at the file's own name instead of writing through it.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from .imageio import IMAGE_EXTENSIONS, ImageReadError
from .dicom import inspect as inspect_dicom
from .dicom import is_dicom_name, looks_like_dicom


@dataclass(frozen=True)
class Source:
    """One image file found under an input ``root``; ``rel`` is its POSIX path from the root."""

    path: Path
    root: Path
    rel: str
    frame: int | None = None  # DICOM files: the 0-based frame; None for other image files


@dataclass(frozen=True)
class Item:
    """An image to segment: where it is, its CSV ``name`` and its output ``key``."""

    path: Path
    name: str
    key: str
    frame: int | None = None  # DICOM files: the 0-based frame to read; None for other image files


def is_image_name(name: str) -> bool:
    """True for names with an image extension (any case), e.g. ``01_TEST.TIF``."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _may_be_dicom(name: str) -> bool:
    """Names worth sniffing for a DICOM preamble: no extension, or a numeric one (``1.2.840.1``)."""
    suffix = os.path.splitext(name)[1]
    return not suffix or suffix[1:].isdigit()


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` name, or a file without an image extension (a file given directly
    may have any) that starts with the DICOM preamble and ``DICM``; image files are not opened."""
    return is_dicom_name(path.name) or (not is_image_name(path.name) and looks_like_dicom(path))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def walk_images(root: Path, exclude: Path | None = None, unlisted: list[str] | None = None) -> list[Path]:
    """Image files under ``root`` in sorted order; hidden names and ``exclude`` skipped.

    Symbolic links to folders are followed, each real folder once, so a link loop ends.
    ``exclude`` (a resolved folder, the output folder) is never entered. A folder that cannot
    be listed (no permission) is skipped, with a line saying so appended to ``unlisted``.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        if exclude is not None and _inside(folder.resolve(), exclude):
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            if unlisted is not None:
                unlisted.append(f"cannot list {folder}: {exc.strerror or exc}")
            return
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = folder / entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                visit(path)
            elif is_image_name(entry.name) or is_dicom_name(entry.name):
                # Broken links and unreadable files are kept: reading them gives an error row.
                found.append(path)
            elif _may_be_dicom(entry.name) and looks_like_dicom(path):
                found.append(path)  # a PACS export: no extension, recognised by its preamble

    visit(root)
    return found


def discover(inputs: list[Path], exclude: Path | None = None, unlisted: list[str] | None = None) -> list[Source]:
    """Every image of ``inputs`` (files and folders), in the order given, folders sorted.

    A file given directly is its own root (its ``rel`` is its name) and is taken whatever its
    extension; the same file given twice is taken once. Folders that cannot be listed are
    reported in ``unlisted`` (see ``walk_images``).
    """
    sources: list[Source] = []
    taken: set[Path] = set()
    for given in inputs:
        given = Path(given)
        if given.is_dir():
            for path in walk_images(given, exclude, unlisted):
                sources.append(Source(path, given, path.relative_to(given).as_posix()))
        else:
            sources.append(Source(given, given.parent, given.name))
    unique = []
    for source in sources:
        marker = Path(os.path.abspath(source.path))
        if marker not in taken:
            taken.add(marker)
            unique.append(source)
    return unique


def _frame_rel(rel: str, frame: int) -> str:
    """``sub/a.dcm`` frame 0 -> ``sub/a_f1.dcm`` (frames are numbered from 1 in names, as in DICOM)."""
    path = PurePosixPath(rel)
    stem, suffix = (path.stem, path.suffix) if path.suffix and not path.suffix[1:].isdigit() else (path.name, "")
    return str(path.with_name(f"{stem}_f{frame + 1}{suffix}"))


def expand_dicom(sources: list[Source]) -> tuple[list[Source], list[str]]:
    """DICOM sources as one source per frame; objects that are not photographs left out.

    Returns (sources, skipped): a single-frame photograph keeps its ``rel`` (frame 0); a
    multi-frame one becomes ``<stem>_f1<ext>``, ``<stem>_f2<ext>`` ...; each object skipped (a
    report, a structured report, an OCT volume) gives one line ``<path>: <why>; skipped``.
    A header that cannot be read keeps the source (reading it gives the error row).
    """
    out: list[Source] = []
    skipped: list[str] = []
    for source in sources:
        if not is_dicom(source.path):
            out.append(source)
            continue
        try:
            header = inspect_dicom(source.path)
        except ImageReadError:
            out.append(Source(source.path, source.root, source.rel, 0))
            continue
        if not header.frames:
            skipped.append(f"{printable_name(source.rel)}: {header.skip}; skipped")
        elif header.frames == 1:
            out.append(Source(source.path, source.root, source.rel, 0))
        else:
            out.extend(Source(source.path, source.root, _frame_rel(source.rel, k), k) for k in range(header.frames))
    return out, skipped


def printable_name(rel: str) -> str:
    """``rel`` as one line of valid UTF-8: undecodable bytes and control characters as ``\\xNN``.

    Python keeps file-name bytes that are not UTF-8 as lone surrogates, which no UTF-8 file
    (the CSV) can hold; a newline or an escape sequence would break the CSV's one-row-per-line
    layout or the terminal. Everything else is left as it is (``ü``, spaces, ``#``).
    """
    try:
        text = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte (not from a file system)
        text = rel.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


def _with_suffix_number(name: str, number: int) -> str:
    """``sub/a.png`` -> ``sub/a~2.png`` (the number goes before the extension)."""
    path = PurePosixPath(name)
    return str(path.with_name(f"{path.stem}~{number}{path.suffix}"))


def _unique(wanted: str, taken: set[str]) -> str:
    name, number = wanted, 1
    while name.casefold() in taken:
        number += 1
        name = _with_suffix_number(wanted, number)
    taken.add(name.casefold())
    return name


def _stem(name: str) -> str:
    """``sub/a.png`` -> ``sub/a``; a name that would be left as ``.`` or ``..`` (``..png``) is kept whole."""
    path = PurePosixPath(name)
    if not path.suffix or path.stem in (".", ".."):
        return name
    return str(path.with_suffix(""))


def assign_names(sources: list[Source]) -> list[Item]:
    """Give each source a unique CSV name and a unique output key (see the module docstring)."""
    taken_names: set[str] = set()
    names = [_unique(printable_name(s.rel), taken_names) for s in sources]
    stems = [_stem(n) for n in names]
    count: dict[str, int] = {}
    for stem in stems:
        count[stem.casefold()] = count.get(stem.casefold(), 0) + 1
    wanted = [stem if count[stem.casefold()] == 1 else name for stem, name in zip(stems, names)]
    # Keys that need no change are reserved first, so a renamed one never takes their place.
    taken_keys = {stem.casefold() for stem in stems if count[stem.casefold()] == 1}
    keys: list[str] = []
    for w, stem in zip(wanted, stems):
        if count[stem.casefold()] == 1:
            keys.append(w)
        else:
            keys.append(_unique(w, taken_keys))
    return [Item(s.path, n, k, s.frame) for s, n, k in zip(sources, names, keys)]


class UnsafeNameError(ValueError):
    """An output key that would be written outside the output folder."""


class LinkedOutputError(ValueError):
    """A symbolic link inside OUT where an output goes; the message says what to do."""


def _link_message(link: Path) -> str:
    try:
        target = f" (to {os.readlink(link)})"
    except OSError:
        target = ""
    return (f"{link} is a symbolic link{target}; vesselseg writes only inside the output folder and never "
            "through links in it: remove the link or choose another --out")


#: What a run writes directly inside OUT (folders and files).
OUTPUT_ENTRIES = ("masks", "overlays", "probabilities", "dicom-seg", "results.csv", "identifiers.csv", "run.json",
                  ".vesselseg.lock", "parts")


def linked_outputs(out: Path) -> None:
    """Raise ``LinkedOutputError`` when an entry of ``OUTPUT_ENTRIES`` in ``out`` is a symbolic link."""
    for name in OUTPUT_ENTRIES:
        if os.path.islink(Path(out) / name):
            raise LinkedOutputError(_link_message(Path(out) / name))


@dataclass(frozen=True)
class OutputPaths:
    """Where the outputs of a key go under the output folder ``out``."""

    out: Path

    def _under(self, kind: str, key: str, suffix: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise UnsafeNameError(f"output name {key!r} would leave the output folder")
        base = self.out / kind
        path = base.joinpath(*parts[:-1], parts[-1] + suffix)
        if not _inside(Path(os.path.normpath(path)), Path(os.path.normpath(base))):
            raise UnsafeNameError(f"output name {key!r} would leave the output folder")
        return path

    def make_folders(self, path: Path) -> None:
        """Create the folders from OUT down to ``path``'s folder; ``LinkedOutputError`` when one is a link.

        ``path`` is one of this object's output paths. A folder that exists as a file is left
        for the write to fail on (an ``OSError`` naming it).
        """
        for folder in self._folders_to(path):
            try:
                os.mkdir(folder)
            except FileExistsError:
                if os.path.islink(folder):
                    raise LinkedOutputError(_link_message(folder)) from None

    def through_link(self, path: Path) -> bool:
        """True when a folder between OUT and ``path`` (one of this object's output paths) is a
        symbolic link, so that touching ``path`` would reach outside OUT."""
        return any(os.path.islink(folder) for folder in self._folders_to(path))

    def _folders_to(self, path: Path) -> Iterator[Path]:
        """The folders from OUT's first subfolder down to ``path``'s folder, in that order."""
        folder = self.out
        for part in path.parent.relative_to(self.out).parts:
            folder = folder / part
            yield folder

    def mask(self, key: str) -> Path:
        return self._under("masks", key, ".png")

    def overlay(self, key: str) -> Path:
        return self._under("overlays", key, ".jpg")

    def probability(self, key: str) -> Path:
        return self._under("probabilities", key, ".png")

    def dicom_seg(self, key: str) -> Path:
        return self._under("dicom-seg", key, ".dcm")

    @property
    def identifiers(self) -> Path:
        return self.out / "identifiers.csv"

    @property
    def csv(self) -> Path:
        return self.out / "results.csv"

    @property
    def lock(self) -> Path:
        return self.out / ".vesselseg.lock"
