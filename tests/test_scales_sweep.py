"""train.scales' threshold sweep: every validation set weighs the same."""
from __future__ import annotations

from train.scales import best_threshold


def test_best_threshold_weighs_each_set_equally_not_each_row() -> None:
    # Three rows of set A favour 0.6 slightly; one row of set B favours 0.4 strongly. Pooled over
    # rows 0.6 would win (3 against 1); per set, 0.4 wins.
    rows = [{"group": "A", "scale": "calibre", "sweep": {"0.4": 0.80, "0.6": 0.82}} for _ in range(3)]
    rows.append({"group": "B", "scale": "calibre", "sweep": {"0.4": 0.80, "0.6": 0.70}})
    best, means = best_threshold(rows)
    assert best == "0.4"
    assert means["0.4"] == 0.80 and abs(means["0.6"] - 0.76) < 1e-12


def test_the_sweep_f1_is_the_score_f1() -> None:
    import numpy as np

    from train.data import Sample
    from train.scales import f1_at, score

    rng = np.random.default_rng(0)
    vessels = rng.random((40, 50)) < 0.2
    fov = np.ones((40, 50), bool)
    fov[:5] = False
    sample = Sample("x", np.zeros((40, 50, 3), np.uint8), vessels, fov)
    prob = np.clip(vessels * 0.6 + rng.random((40, 50)) * 0.5, 0, 1).astype(np.float32)
    for t in (0.3, 0.5, 0.7):
        assert f1_at(sample, prob, t) == score(sample, prob, t, 2.0)["f1"]


def test_write_sets_gives_folders_that_score_pairs_and_reads_back_exactly(tmp_path) -> None:
    import numpy as np

    from train.data import Sample
    from train.scales import Case, write_sets
    from vesselcli.io.imageio import read_image, read_mask
    from vesselcli.analysis.score import ScoreConfig, pair_folders

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    vessels, fov = rng.random((30, 40)) < 0.3, rng.random((30, 40)) < 0.9
    cases = [Case("HRF", Sample("HRF/05_h.jpg", rgb, vessels, fov), 0.2),
             Case("HRF crops", Sample("HRF/05_h.jpg#crop", rgb[5:25, 5:25], vessels[5:25, 5:25], fov[5:25, 5:25]), 0.2)]
    write_sets(cases, tmp_path)
    whole, crops = tmp_path / "HRF", tmp_path / "HRF_crops"
    assert np.array_equal(read_image(whole / "images" / "05_h.png"), rgb)
    assert np.array_equal(read_mask(whole / "manual" / "05_h.png"), vessels)
    assert np.array_equal(read_mask(crops / "mask" / "05_h_crop.png"), fov[5:25, 5:25])
    pairing = pair_folders(ScoreConfig(crops / "images", crops / "manual", crops / "mask"))
    assert [(p.pred.name, p.gt.name, p.fov.name) for p in pairing.pairs] == [("05_h_crop.png",) * 3]
