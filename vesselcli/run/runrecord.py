"""``OUT/run.json``: the settings that shaped a run's outputs, and what the run did.

A JSON object. ``"settings"`` is a flat dict of everything that changes what is written
(``output_settings``): the model file and its SHA-256, the threshold, the model's scale, the
precision, the tiling, TTA, the annotations and FOV masks used and which outputs are written.
A rerun into the same OUT compares its settings with the recorded ones (``differences``):
equal, it resumes; different, it is refused unless ``--overwrite`` (``check_settings``).
Settings that cannot change an output (workers, batch size, quiet, the pixel limit) are only
in ``"options"``.

The other keys are informational, for people and for tools that read a run (a report, a shard
merger): ``version``, ``engine``, ``device``, ``machine``, ``started``, ``finished``
(ISO 8601 UTC; ``null`` while running or after a crash), ``duration_s``, ``counts``
(``done``, ``failed``, ``skipped``) and ``options`` (every CLI option). Readers tolerate missing
keys (``read_run`` returns the dict as found).
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from ..io.imageio import write_atomic
from ..provenance import file_sha256

RUN_FILE = "run.json"

#: A setting whose recorded value may differ when the one it names is equal: the model is
#: the same model when its bytes are (the shipped model lives at another path in every
#: install; a copied file is the same model).
SAME_WHEN_EQUAL = {"model": "model_sha256"}


class SettingsMismatchError(ValueError):
    """OUT holds outputs made with other settings; the message lists them and says what to do."""


def _folder(path: Path | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def output_settings(
    *,
    model: Path | None,
    threshold: float,
    fov_diameter: float,
    precision: str,
    tile_size: int,
    tile_overlap: int,
    tta: bool,
    gt_dir: Path | None,
    gt_pattern: str | None,
    fov_dir: Path | None,
    overlays: bool,
    probabilities: bool,
    dicom_seg: bool = False,
    identifiers: bool = False,
    scale_rule: str = "fov",
    pixel_size_um: float | None = None,
) -> dict[str, Any]:
    """The flat ``settings`` dict (JSON types only) of a run with these choices.

    ``model``: the file the engine loaded (None for an engine without one, a test double);
    ``tile_size`` / ``tile_overlap`` are the ones used (after rounding to the model's multiple);
    ``fov_diameter`` is the model's scale (the FOV diameter in pixels it brings images to);
    ``scale_rule``: "fov" or "calibre" (``segment --scale-rule``);
    folders are absolute paths, so the same folder named from another working directory is equal;
    ``pixel_size_um`` (``--pixel-size``) fills the mm and um morphology columns.
    ``dicom_seg`` (DICOM Segmentations written) and ``identifiers`` (identifiers.csv written)
    are recorded only when on, so the record of a run without them equals that of a version
    that had neither.
    """
    optional = {"dicom_seg": bool(dicom_seg), "identifiers": bool(identifiers)}
    return {
        "model": None if model is None else os.path.abspath(model),
        "model_sha256": None if model is None else file_sha256(model),
        "threshold": float(threshold),
        "scale_fov_diameter_px": float(fov_diameter),
        "scale_rule": scale_rule,
        "precision": precision,
        "tile_size": int(tile_size),
        "tile_overlap": int(tile_overlap),
        "tta": bool(tta),
        "gt": _folder(gt_dir),
        "gt_pattern": gt_pattern,
        "fov": _folder(fov_dir),
        "masks": True,
        "overlays": bool(overlays),
        "probabilities": bool(probabilities),
        "pixel_size_um": None if pixel_size_um is None else float(pixel_size_um),
        **{name: True for name, on in optional.items() if on},
    }


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(setting, old value, new value)`` for every setting that differs, in ``new``'s order.

    A setting recorded on one side only differs (its missing value is shown as ``None``), except
    those of ``SAME_WHEN_EQUAL`` whose partner is equal.
    """
    missing = object()
    names = list(new) + [k for k in old if k not in new]
    found = []
    for name in names:
        before, after = old.get(name, missing), new.get(name, missing)
        if before == after:
            continue
        partner = SAME_WHEN_EQUAL.get(name)
        if partner is not None and partner in old and old.get(partner) == new.get(partner):
            continue
        found.append((name, None if before is missing else before, None if after is missing else after))
    return found


def _show(value: Any) -> str:
    return "(not recorded)" if value is None else json.dumps(value)


class NotAJsonObject(ValueError):
    """A record file that holds something other than a JSON object (not ours, or damaged)."""


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (a dict as found), None when there is no such file.

    ``OSError`` when the file cannot be read, ``UnicodeDecodeError`` when it is not UTF-8,
    ``NotAJsonObject`` when it holds no JSON object. Callers turn these into their own message.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise NotAJsonObject(str(path))
    return record


def read_run(path: Path) -> dict[str, Any] | None:
    """The recorded run (a dict as found), None when there is no such file.

    ``SettingsMismatchError`` when the file is not a JSON object (not ours, or damaged).
    """
    try:
        return read_json_object(path)
    except NotAJsonObject:
        raise SettingsMismatchError(
            f"{path} is not a vesselseg run record (not a JSON object); pass --overwrite to replace it "
            "or choose another --out"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsMismatchError(f"cannot read {path} ({exc}); pass --overwrite to replace it or choose another --out") from None


def check_settings(out: Path, settings: Mapping[str, Any], results_exist: bool) -> None:
    """Refuse to resume into ``out`` when its recorded settings differ from ``settings``.

    ``results_exist``: OUT already holds a results.csv. Nothing recorded and no results: a new
    OUT, fine. Results without a record: made by an older vesselseg (or by hand), settings
    unknown: refused. Raises ``SettingsMismatchError`` listing each differing setting
    (old -> new) and the two ways out.
    """
    path = Path(out) / RUN_FILE
    record = read_run(path)
    if record is None:
        if results_exist:
            raise SettingsMismatchError(
                f"{out} holds a results.csv but no {RUN_FILE}, so the settings its outputs were made with are "
                "unknown (an older vesselseg wrote it); pass --overwrite to redo every image into it, or "
                "choose another --out"
            )
        return
    old = record.get("settings")
    if not isinstance(old, dict):
        raise SettingsMismatchError(
            f"{path} records no settings; pass --overwrite to redo every image into {out}, or choose another --out"
        )
    changed = differences(old, settings)
    if changed:
        lines = "; ".join(f"{name}: {_show(before)} -> {_show(after)}" for name, before, after in changed)
        raise SettingsMismatchError(
            f"{out} holds outputs made with other settings ({lines}); rerunning would mix the two. "
            "Pass --overwrite to redo every image with the new settings, or choose another --out "
            "(or rerun with the recorded settings to resume)"
        )


def machine() -> dict[str, Any]:
    """Where the run ran: host name, OS, processor, usable CPU cores, Python."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": cores,
        "python": platform.python_version(),
    }


def now() -> str:
    """The current time, ISO 8601 UTC to the second (``2026-11-29T16:05:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_run(out: Path, record: Mapping[str, Any]) -> None:
    """Write ``OUT/run.json`` atomically (indented, keys in the given order)."""
    write_atomic(Path(out) / RUN_FILE, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))


def new_record(settings: Mapping[str, Any], engine: str, device: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a run that starts now (``finished`` null, ``counts`` zero)."""
    return {
        "version": __version__,
        "settings": dict(settings),
        "engine": engine,
        "device": device,
        "machine": machine(),
        "started": now(),
        "finished": None,
        "duration_s": None,
        "counts": {"done": 0, "failed": 0, "skipped": 0},
        "options": dict(options),
    }
