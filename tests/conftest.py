"""Shared fixtures: where the public datasets are, and the shipped model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``$VESSELSEG_DATA`` when set, else ``../shared/data`` beside the project."""
    env = os.environ.get("VESSELSEG_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _dataset(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"dataset {name} not found at {path}: set VESSELSEG_DATA or place the data in ../shared/data")
    return path


@pytest.fixture(scope="module")
def model_file() -> Path:
    """The shipped ONNX model (or ``$VESSELSEG_TEST_MODEL``) for end-to-end segment tests."""
    from vesselcli.engines import shipped_model

    path = Path(os.environ.get("VESSELSEG_TEST_MODEL") or shipped_model(".onnx"))
    if not path.is_file():
        pytest.skip(f"model {path} not found: the release puts the shipped model there (`make engine` exports it)")
    return path


@pytest.fixture()
def fake_engine(monkeypatch):
    """A numpy engine (dark pixels are vessels) in place of every real one."""
    import vesselcli.engines
    from segment_fakes import DarkIsVessel

    engine = DarkIsVessel()
    monkeypatch.setattr(vesselcli.engines, "choose_engine", lambda model, kind, device, **options: vesselcli.engines.Selection(engine))
    return engine


@pytest.fixture(scope="session")
def drive_root() -> Path:
    return _dataset("DRIVE")


@pytest.fixture(scope="session")
def chase_root() -> Path:
    return _dataset("CHASE_DB1")


@pytest.fixture(scope="session")
def drive512_root() -> Path:
    return _dataset("DRIVE-512")


@pytest.fixture(scope="session")
def hrf_root() -> Path:
    return _dataset("HRF")
