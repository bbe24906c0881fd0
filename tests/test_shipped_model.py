"""Regression guard on the model that ships inside the package."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.evaluate import protocol_sets, score_set
from vesselcli.network.checkpoint import load_model, preprocessing_of

SHIPPED = Path(__file__).resolve().parents[1] / "vesselcli" / "models" / "default.pt"


@pytest.mark.data
def test_shipped_model_keeps_drive_f1_inside_the_fov(drive_root: Path) -> None:
    model, ckpt = load_model(SHIPPED)
    triples = protocol_sets(drive_root.parent)["DRIVE"]
    assert len(triples) == 20
    figures = score_set(model, preprocessing_of(ckpt), float(ckpt["threshold"]), triples, whole_image=False)
    assert figures["dice"] >= 0.80, figures
    assert figures["auc"] >= 0.97, figures


@pytest.mark.data
def test_shipped_model_keeps_drive512_iou(drive512_root: Path) -> None:
    """The report's protocol: 20 DRIVE-512 test images, whole image. A regression floor 0.01
    below the shipped model's 0.6845 (numeric drift cannot cross it, a real loss does); the
    comparison with the report (0.6827) lives in BENCHMARKS.md with its interval, not here."""
    model, ckpt = load_model(SHIPPED)
    triples = protocol_sets(drive512_root.parent)["DRIVE-512"]
    assert len(triples) == 20
    figures = score_set(model, preprocessing_of(ckpt), float(ckpt["threshold"]), triples, whole_image=True)
    assert figures["iou"] >= 0.6745, figures


def test_shipped_checkpoint_describes_itself() -> None:
    _, ckpt = load_model(SHIPPED)
    assert ckpt["model_args"]["padding"] == "same"
    assert 0.05 < ckpt["threshold"] < 0.95
    assert ckpt["preprocessing"]["fov_diameter"] > 0
    assert any("DRIVE" in d for d in ckpt["data"])
    assert "optimizer" not in ckpt  # the shipped file carries weights, not training state
