"""Pairing images with annotations and FOV masks by file name: one documented rule.

A file's *key* is its stem (name without the last extension), lower-cased, with at most one
annotation suffix and then at most one split suffix removed:

- annotation suffixes: ``_manual1``, ``_manual2`` (DRIVE), ``_1stho``, ``_2ndho`` (CHASE_DB1),
  ``.ah``, ``.vk`` (STARE), ``_mask``, ``_fov`` (FOV masks of DRIVE, CHASE_DB1, HRF),
  ``_gt``, ``_label``, ``_labels``, ``_seg``, ``_vessels``, ``_annotation``;
- split suffixes: ``_test``, ``_training``, ``_train``, ``_val`` (DRIVE).

So ``01_test.tif``, ``01_manual1.gif`` and ``01_test_mask.gif`` share the key ``01``;
``Image_01L.jpg`` and ``Image_01L_1stHO.png`` share ``image_01l``; ``im0001.ppm`` and
``im0001.ah.ppm`` share ``im0001``; HRF's ``01_h.jpg``, ``01_h.tif`` and ``01_h_mask.tif``
share ``01_h``; plain same-stem pairs share their stem. A custom ``pattern`` such as
``{stem}_seg`` names the partner of an image directly (``{stem}`` is the image's stem).

An image whose key matches two or more files is *ambiguous*: an error, never a guess.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS

ANNOTATION_SUFFIXES = (
    "_manual1", "_manual2", "_1stho", "_2ndho", ".ah", ".vk", "_mask", "_fov",
    "_gt", "_label", "_labels", "_seg", "_vessels", "_annotation",
)
SPLIT_SUFFIXES = ("_test", "_training", "_train", "_val")


def stem_of(path: Path | str) -> str:
    """File name without its last extension (``im0001.ah.ppm`` -> ``im0001.ah``)."""
    name = Path(path).name
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def pairing_key(path: Path | str) -> str:
    """The key that pairs a file with its partners (see the module docstring)."""
    key = stem_of(path).lower()
    for suffix in ANNOTATION_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
            break
    for suffix in SPLIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
            break
    return key


class PairingError(ValueError):
    """An image matched several annotation files; the message lists them."""


def check_pattern(pattern: str) -> str:
    """``pattern`` when it can name a partner, else ``ValueError`` saying what to write.

    A pattern holds ``{stem}`` (the image's stem), no other braces, and no extension: partners
    are matched by stem, so any image extension may follow (``{stem}_manual1`` finds
    ``01_manual1.gif``).
    """
    if "{stem}" not in pattern:
        raise ValueError(f"'{pattern}' does not contain {{stem}}; name the partner from the image's stem, e.g. '{{stem}}_manual1'")
    try:
        pattern.format(stem="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"'{pattern}' is not a valid pattern ({exc}); only {{stem}} may appear in braces") from None
    if Path(pattern).suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"'{pattern}' ends with an extension; give the partner's name without it, e.g. '{Path(pattern).stem}'")
    return pattern


@dataclass(frozen=True)
class Index:
    """Files of an annotation folder indexed by pairing key (and by exact stem for patterns)."""

    by_key: dict[str, tuple[Path, ...]]
    by_stem: dict[str, tuple[Path, ...]]

    @classmethod
    def of(cls, files: list[Path]) -> "Index":
        by_key: dict[str, list[Path]] = defaultdict(list)
        by_stem: dict[str, list[Path]] = defaultdict(list)
        for f in sorted(files):
            by_key[pairing_key(f)].append(f)
            by_stem[stem_of(f).lower()].append(f)
        return cls({k: tuple(v) for k, v in by_key.items()}, {k: tuple(v) for k, v in by_stem.items()})

    def find(self, image: Path | str, pattern: str | None = None) -> Path | None:
        """The partner of ``image``, None when there is none; ``PairingError`` if ambiguous."""
        if pattern:
            wanted = pattern.format(stem=stem_of(image)).lower()
            found = self.by_stem.get(wanted, ())
        else:
            found = self.by_key.get(pairing_key(image), ())
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise PairingError(
                f"{Path(image).name} matches {len(found)} files ({names}); keep one per image in that folder "
                "or name the partner with a pattern such as '{stem}_manual1'"
            )
        return found[0] if found else None


def pair_files(
    images: list[Path], partners: list[Path], pattern: str | None = None
) -> tuple[dict[Path, Path], list[Path], dict[Path, str]]:
    """Pair each image with a partner file.

    Returns (pairs image -> partner, partners left unpaired, image -> error for ambiguous ones).
    """
    index = Index.of(partners)
    pairs: dict[Path, Path] = {}
    errors: dict[Path, str] = {}
    for image in images:
        try:
            found = index.find(image, pattern)
        except PairingError as exc:
            errors[image] = str(exc)
            continue
        if found is not None:
            pairs[image] = found
    used = set(pairs.values())
    unpaired = [p for p in sorted(partners) if p not in used]
    return pairs, unpaired, errors
