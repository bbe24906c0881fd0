"""Training: DDP over two gloo processes, the loss falling on real data, the data layouts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import PatchDataset, find_training_files, load_samples, split_validation
import train.loop
from train.data import Sample
from train.loop import evaluate, vessel_loss
from train.options import parse_args
from vesselcli.analysis import metrics
from vesselcli.network.checkpoint import load_model
from vesselcli.imaging.preprocess import Preprocessing
from vesselcli.network.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--base-channels", "4", "--depth", "2", "--patch", "64", "--samples-per-image", "1", "--workers", "0", "--threads", "1"]


@pytest.mark.data
def test_ddp_with_two_gloo_processes_trains_and_checkpoints(drive_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "train", "--device", "cpu", "--data", str(drive_root), "--out", str(out),
        "--max-steps", "3", "--val-fraction", "0.1", "--batch-size", "2", *TINY,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2 (DDP gloo)" in proc.stdout
    assert "batch 2 per process (4 in all)" in proc.stdout
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json"):
        assert (out / name).is_file(), name
    model, data = load_model(out / "last.pt")
    assert data["step"] == 3 and data["model_args"]["base_channels"] == 4
    assert set(data["metrics"]) >= {"val_iou", "val_dice", "val_auc"}
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + one epoch (only rank 0 writes)


@pytest.mark.data
def test_resume_continues_from_the_last_step(drive_root: Path, tmp_path: Path) -> None:
    from train.__main__ import main

    out = tmp_path / "run"
    common = ["--data", str(drive_root), "--out", str(out), "--val-fraction", "0.1", *TINY]
    assert main([*common, "--max-steps", "2"]) == 0
    assert main([*common, "--max-steps", "4", "--resume", str(out / "last.pt")]) == 0
    _, data = load_model(out / "last.pt")
    assert data["step"] == 4


@pytest.mark.data
def test_loss_falls_on_a_small_real_batch(drive_root: Path) -> None:
    torch.manual_seed(0)
    samples = load_samples([drive_root])[:2]
    dataset = PatchDataset(samples, Preprocessing(), patch=96, samples_per_image=2, seed=0)
    x, y, fov = (torch.from_numpy(np.stack(parts)) for parts in zip(*(dataset[i] for i in range(4))))
    model = UNet(UNetConfig(base_channels=8, depth=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = vessel_loss(model(x), y, fov, "bce+dice")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.data
def test_layouts_drive_and_chase_use_only_training_images(drive_root: Path, chase_root: Path) -> None:
    drive = find_training_files(drive_root)
    assert len(drive) == 20 and all("training" in str(p[0]) for p in drive)
    assert all(p[1].name.endswith("_manual1.gif") and p[2].name.endswith("_training_mask.gif") for p in drive)
    chase = find_training_files(chase_root)
    names = sorted(p[0].stem for p in chase)
    assert len(chase) == 20 and names[0] == "Image_01L" and names[-1] == "Image_10R"


def test_generic_layout_pairs_same_stem_masks_and_detects_fov(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = np.zeros((64, 64, 3), np.uint8)
        yy, xx = np.mgrid[:64, :64]
        img[(yy - 32) ** 2 + (xx - 32) ** 2 < 28**2] = rng.integers(80, 200, 3)
        Image.fromarray(img).save(tmp_path / "images" / f"eye{i}.png")
        Image.fromarray((rng.random((64, 64)) > 0.9).astype(np.uint8) * 255).save(tmp_path / "masks" / f"eye{i}.png")
    samples = load_samples([tmp_path])
    assert len(samples) == 3
    assert 0.5 < samples[0].fov.mean() < 0.8  # the detected disc, not the whole frame
    train, val = split_validation(samples, 0.34, seed=0)
    assert len(train) == 2 and len(val) == 1


def test_bad_data_root_says_what_layouts_are_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DRIVE, CHASE_DB1, HRF or generic"):
        find_training_files(tmp_path)


def test_config_file_and_command_line_merge(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('lr = 0.01\nbase_channels = 8\nloss = "bce"\n')
    cfg = parse_args(["--config", str(cfg_file), "--data", "x", "--lr", "0.5"])
    assert cfg.lr == 0.5 and cfg.base_channels == 8 and cfg.loss == "bce" and cfg.data == ("x",)
    report = parse_args(["--config", str(ROOT / "train/configs/report.toml"), "--data", "x"])
    assert (report.base_channels, report.depth, report.padding, report.norm) == (64, 4, "valid", "none")
    assert (report.lr, report.batch_size, report.loss, report.epochs) == (1e-4, 4, "bce", 400)


def _validate_on(monkeypatch: pytest.MonkeyPatch, prob: np.ndarray, truth: np.ndarray) -> dict:
    """``train.loop.evaluate`` on one image whose predicted probability map is ``prob``."""
    monkeypatch.setattr(train.loop, "predict_probability", lambda model, sample, pre, device, min_factor=0.0, camera=0.0: prob)
    sample = Sample("x", np.zeros((*prob.shape, 3), np.uint8), truth, np.ones(prob.shape, bool))
    return evaluate(torch.nn.Identity(), [sample], Preprocessing(), torch.device("cpu"), rank=0, world=1)


def test_stored_threshold_gives_the_validation_dice_it_was_chosen_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two pixels: background 0.29 (73.95/255), vessel 74.7/255. Any threshold in (0.29, 0.2929]
    # separates them; rounding prob * 255 put the vessel in bin 75 and stored 75/255 = 0.2941,
    # which drops the vessel (validation Dice 1.0 at the stored threshold, 0.0 when applied).
    prob = np.array([[0.29, 74.7 / 255]])
    truth = np.array([[False, True]])
    figures = _validate_on(monkeypatch, prob, truth)
    assert figures["best_dice"] == 1.0
    applied = metrics.dice(metrics.confusion(prob >= figures["best_threshold"], truth))
    assert applied == figures["best_dice"]


def test_validation_figures_match_the_metrics_module(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((30, 40)) < 0.2
    prob = np.clip(truth * 0.4 + rng.random((30, 40)) * 0.6, 0, 1).astype(np.float32)
    figures = _validate_on(monkeypatch, prob, truth)
    at_half = metrics.confusion(prob >= 0.5, truth)
    assert (figures["iou"], figures["dice"]) == (metrics.iou(at_half), metrics.dice(at_half))
    threshold, f1 = metrics.best_threshold_f1(prob, truth)
    assert (figures["best_threshold"], figures["best_dice"]) == (threshold, f1)
    at_best = metrics.confusion(prob >= threshold, truth)
    assert figures["best_iou"] == metrics.iou(at_best)
    # AUC from the pooled 16-bit histograms: that of the float map to within 1e-4.
    assert figures["auc"] == pytest.approx(metrics.roc_auc(prob, truth), abs=1e-4)


@pytest.mark.data
def test_repackage_reproduces_drive512_exactly(drive_root: Path, drive512_root: Path) -> None:
    """The re-packaging used in training is the very one that made DRIVE-512's test files."""
    from train.data import Sample, repackage
    from vesselcli.io.imageio import read_image, read_mask

    for n in ("01", "13"):
        original = Sample(
            name=f"DRIVE/{n}_test.tif",
            rgb=read_image(drive_root / "test" / "images" / f"{n}_test.tif"),
            vessels=read_mask(drive_root / "test" / "1st_manual" / f"{n}_manual1.gif"),
            fov=read_mask(drive_root / "test" / "mask" / f"{n}_test_mask.gif"),
        )
        squashed = repackage(original, 512)
        assert squashed.name.endswith("@512") and squashed.fov.shape == (512, 512)
        assert np.array_equal(squashed.rgb, read_image(drive512_root / "test" / "images" / f"{n}_test.png"))
        assert np.array_equal(squashed.vessels, read_mask(drive512_root / "test" / "masks" / f"{n}_test.png"))


@pytest.mark.data
def test_init_starts_from_a_checkpoint_and_refuses_another_model(drive_root: Path, tmp_path: Path) -> None:
    from train.__main__ import main

    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--data", str(drive_root), "--val-fraction", "0.1", "--max-steps", "1", *TINY]
    assert main([*common, "--out", str(first)]) == 0
    # lr 0: the weights cannot move, so the fine-tuned run must hold the first run's weights.
    assert main([*common, "--out", str(second), "--init", str(first / "last.pt"), "--lr", "0", "--repackage", "128"]) == 0
    a, b = torch.load(first / "last.pt", weights_only=True), torch.load(second / "last.pt", weights_only=True)
    conv = [k for k in a["model"] if k.endswith("weight") and a["model"][k].ndim == 4]
    assert conv and all(torch.equal(a["model"][k], b["model"][k]) for k in conv)
    assert b["step"] == 1 and any("re-packaged to 128x128" in d for d in b["data"])
    # A narrower checkpoint is widened: the first channels keep their weights (up to the noise).
    assert main([*common, "--out", str(tmp_path / "third"), "--init", str(first / "last.pt"), "--lr", "0", "--base-channels", "8"]) == 0
    c = torch.load(tmp_path / "third" / "last.pt", weights_only=True)
    assert c["model_args"]["base_channels"] == 8
    w = a["model"]["down.0.0.weight"]
    assert c["model"]["down.0.0.weight"].shape[0] == 8
    assert torch.allclose(c["model"]["down.0.0.weight"][:4], w, atol=0.05 * float(w.std()))
    with pytest.raises(SystemExit, match="cannot start"):
        main([*common, "--out", str(tmp_path / "fourth"), "--init", str(first / "last.pt"), "--depth", "3"])


@pytest.mark.parametrize("norm,padding", [("batch", "same"), ("none", "valid")])
def test_widening_keeps_the_function_in_eval_and_training_mode(norm: str, padding: str) -> None:
    from train.widen import widen

    torch.manual_seed(0)
    narrow = UNet(UNetConfig(base_channels=4, depth=2, norm=norm, padding=padding))
    if norm == "batch":  # trained-looking statistics, so copying them is actually tested
        for module in narrow.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
    wide = widen(narrow, UNetConfig(base_channels=7, depth=2, norm=norm, padding=padding), seed=3)
    assert wide.down[0][0].weight.shape[0] == 7 and wide.bottleneck[-2 if norm == "none" else -3].weight.shape[0] == 28
    x = torch.randn(2, 1, 40, 36)
    for mode in ("eval", "train"):
        narrow.train(mode == "train")
        wide.train(mode == "train")
        with torch.no_grad():
            assert torch.allclose(narrow(x), wide(x), atol=1e-4), mode
    noisy = widen(narrow, UNetConfig(base_channels=7, depth=2, norm=norm, padding=padding), noise=0.01, seed=3)
    assert not torch.equal(noisy.down[0][0].weight[:4], narrow.down[0][0].weight)
    with pytest.raises(ValueError, match="narrow"):
        widen(narrow, UNetConfig(base_channels=2, depth=2, norm=norm, padding=padding))
    with pytest.raises(ValueError, match="only widen"):
        widen(narrow, UNetConfig(base_channels=8, depth=3, norm=norm, padding=padding))


def test_aspect_jitter_changes_height_against_width(monkeypatch: pytest.MonkeyPatch) -> None:
    import train.data as data

    disc = np.zeros((300, 300), bool)
    yy, xx = np.mgrid[:300, :300]
    disc[(yy - 150) ** 2 + (xx - 150) ** 2 < 140**2] = True
    sample = data.Sample("x/a", np.full((300, 300, 3), 120, np.uint8), np.zeros_like(disc), disc)
    dataset = PatchDataset([sample], Preprocessing(fov_diameter=280), patch=64, samples_per_image=64, seed=3)
    shapes = []
    real_resize = data.resize_image
    monkeypatch.setattr(data, "resize_image", lambda a, shape: shapes.append(tuple(shape)) or real_resize(a, shape))
    for i in range(len(dataset)):
        dataset[i]
    ratios = [h / w for h, w in shapes]
    assert len(ratios) == 64
    assert min(ratios) < 0.97 and max(ratios) > 1.03  # both ways
    assert 1 / 1.09 <= min(ratios) and max(ratios) <= 1.09  # within the documented jitter


def test_weight_average_is_the_exponential_mean_of_weights_and_statistics() -> None:
    from train.ema import WeightAverage

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    ema = WeightAverage(model, decay=0.75)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(2, 1, 8, 8))  # moves the running statistics and the batch counter
    ema.update()
    now, average = model.state_dict(), ema.state_dict()
    for name, value in average.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * before[name] + 0.25 * now[name], atol=1e-6), name
        else:
            assert torch.equal(value, now[name]), name
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert not torch.equal(model[0].weight, ema.model[0].weight)  # a copy, not the same tensors
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(model, decay=1.0)


@pytest.mark.data
def test_ema_run_keeps_the_average_and_resumes_both_weights(drive_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from train.__main__ import main
    from train.ship import main as ship

    out = tmp_path / "run"
    common = ["--data", str(drive_root), "--out", str(out), "--val-fraction", "0.1", "--ema", "0.5", *TINY]
    assert main([*common, "--max-steps", "2"]) == 0
    first = torch.load(out / "last.pt", weights_only=True)
    conv = [k for k in first["model"] if k.endswith("weight") and first["model"][k].ndim == 4]
    assert conv and not all(torch.equal(first["model"][k], first["train_model"][k]) for k in conv)
    # With the optimiser stilled, the raw weights stay put, so two more steps move the average
    # exactly 1 - 0.5**2 of the way towards them; resuming either from the wrong field breaks this.
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: None)
    assert main([*common, "--max-steps", "4", "--resume", str(out / "last.pt")]) == 0
    second = torch.load(out / "last.pt", weights_only=True)
    for k in conv:
        assert torch.equal(second["train_model"][k], first["train_model"][k]), k
        expected = 0.25 * first["model"][k] + 0.75 * first["train_model"][k]
        assert torch.allclose(second["model"][k], expected, atol=1e-6), k
    assert ship([str(out / "last.pt"), "--out", str(tmp_path / "shipped.pt")]) == 0
    shipped = torch.load(tmp_path / "shipped.pt", weights_only=True)
    assert "train_model" not in shipped and "optimizer" not in shipped
    assert all(torch.equal(shipped["model"][k], second["model"][k]) for k in conv)
    model, _ = load_model(tmp_path / "shipped.pt")
    assert torch.equal(model.state_dict()[conv[0]], second["model"][conv[0]])


def _write_hrf_like(root: Path, stems: list[str]) -> None:
    """An HRF-layout folder: images/NN_x.jpg (or .JPG), manual1/NN_x.tif, mask/NN_x_mask.tif."""
    for folder in ("images", "manual1", "mask"):
        (root / folder).mkdir(parents=True)
    yy, xx = np.mgrid[:48, :64]
    disc = (yy - 24) ** 2 + (xx - 32) ** 2 < 22**2
    for stem in stems:
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[disc] = (190, 100, 50)
        Image.fromarray(rgb).save(root / "images" / f"{stem}.{'JPG' if stem.endswith('dr') else 'jpg'}")
        Image.fromarray((disc & (yy % 12 < 2)).astype(np.uint8) * 255).save(root / "manual1" / f"{stem}.tif")
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / "mask" / f"{stem}_mask.tif")


def test_hrf_layout_holds_out_the_fifth_image_of_each_group_and_leaves_the_others_split_alone(tmp_path: Path) -> None:
    stems = [f"0{i}_{g}" for g in ("h", "dr", "g") for i in (3, 4, 5)]
    _write_hrf_like(tmp_path / "HRF", stems)
    triples = find_training_files(tmp_path / "HRF")
    assert sorted(t[0].stem for t in triples) == sorted(stems)
    assert all(t[1].name == t[0].stem + ".tif" and t[2].name == t[0].stem + "_mask.tif" for t in triples)
    hrf = load_samples([tmp_path / "HRF"])
    other = [s.__class__(f"OTHER/{i}.png", s.rgb, s.vessels, s.fov) for i, s in enumerate(hrf * 2)]
    alone = split_validation(other, 0.2, seed=0)
    train, val = split_validation(other + hrf, 0.2, seed=0)
    assert sorted(s.name for s in val if s.name.startswith("HRF/")) == ["HRF/05_dr.JPG", "HRF/05_g.jpg", "HRF/05_h.jpg"]
    assert [s.name for s in val if s.name.startswith("OTHER/")] == [s.name for s in alone[1]]
    assert len(train) + len(val) == len(other) + len(hrf) and not {s.name for s in train} & {s.name for s in val}


def test_calibre_range_draws_each_patch_at_a_scale_giving_the_wanted_vessel_width(monkeypatch: pytest.MonkeyPatch) -> None:
    import train.data as data

    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 200) ** 2 + (xx - 200) ** 2 < 190**2
    vessels = disc & (yy % 40 < 8)  # 8 px wide stripes: calibre about 8
    sample = data.Sample("x/a", np.full((400, 400, 3), 120, np.uint8), vessels, disc)
    dataset = PatchDataset([sample], Preprocessing(fov_diameter=380), patch=64, samples_per_image=48, seed=1, calibre_range=(1.0, 4.0))
    assert dataset.calibre[0] == pytest.approx(8.0, rel=0.05)
    widths = []
    real_resize = data.resize_image
    monkeypatch.setattr(data, "resize_image", lambda a, shape: widths.append(shape[1]) or real_resize(a, shape))
    for i in range(len(dataset)):
        dataset[i]
    factors = np.array(widths) / 400
    calibre = dataset.calibre[0]
    assert factors.min() >= 1.0 / calibre - 0.01 and factors.max() <= 4.0 / calibre + 0.01
    assert factors.min() < 1.5 / calibre and factors.max() > 3.0 / calibre  # the whole range is drawn
    plain = PatchDataset([sample], Preprocessing(fov_diameter=380), patch=64, samples_per_image=48, seed=1)
    assert all(0.79 <= plain.scale_of(0, np.random.default_rng(i)) <= 1.26 for i in range(20))  # today's jitter


def test_calibre_range_is_read_from_a_config_and_checked(tmp_path: Path) -> None:
    cfg = parse_args(["--config", str(ROOT / "train/configs/multiscale.toml"), "--data", "x"])
    assert cfg.calibre_range == (1.0, 5.0)
    assert parse_args(["--data", "x", "--calibre-range", "2", "3"]).calibre_range == (2.0, 3.0)
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--calibre-range", "3", "2"])


def test_min_factor_draws_and_validates_a_large_photograph_at_the_calibre_rules_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    import train.loop as loop
    from vesselcli.imaging.calibre import MIN_FACTOR

    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 200) ** 2 + (xx - 200) ** 2 < 190**2  # FOV rule with a 38 px diameter: factor 0.1
    sample = Sample("HRF/a", np.full((400, 400, 3), 120, np.uint8), disc & (yy % 40 < 8), disc)
    pre = Preprocessing(fov_diameter=38)
    fov_rule = PatchDataset([sample], pre, patch=64, samples_per_image=4, seed=1)
    assert all(0.079 <= fov_rule.scale_of(0, np.random.default_rng(i)) <= 0.126 for i in range(20))
    rule = PatchDataset([sample], pre, patch=64, samples_per_image=4, seed=1, min_factor=MIN_FACTOR)
    factors = [rule.scale_of(0, np.random.default_rng(i)) for i in range(40)]
    assert 0.4 - 1e-9 <= min(factors) < 0.45 and 0.57 < max(factors) <= 0.625 + 1e-9  # 0.5 x [0.8, 1.25]
    small = PatchDataset([sample], Preprocessing(fov_diameter=760), patch=64, samples_per_image=4, seed=1, min_factor=0.5)
    assert small.base_scale == [pytest.approx(2.0, rel=0.01)]  # a factor above the floor is left alone
    shapes = []
    monkeypatch.setattr(loop, "prepare_at", lambda rgb, fov, p, factor: shapes.append(factor) or (np.zeros((1, 8, 8), np.float32), fov))
    monkeypatch.setattr(loop, "resize_image", lambda a, shape: np.zeros(shape, np.float32))
    loop.predict_probability(torch.nn.Identity(), sample, pre, torch.device("cpu"), MIN_FACTOR)
    loop.predict_probability(torch.nn.Identity(), sample, pre, torch.device("cpu"))
    assert shapes == [MIN_FACTOR, pytest.approx(0.1, rel=0.01)]
    assert parse_args(["--config", str(ROOT / "train/configs/rulescale.toml"), "--data", "x"]).min_factor == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--min-factor", "-1"])


def test_camera_channel_adds_a_plane_of_log2_fov_diameter_and_starts_as_the_same_function(tmp_path: Path) -> None:
    from train.__main__ import with_inputs
    from train.data import camera_value
    from train.ship import main as ship
    from vesselcli.network.unet import UNet, UNetConfig

    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 200) ** 2 + (xx - 200) ** 2 < 190**2  # FOV diameter about 380
    sample = Sample("x/a", np.full((400, 400, 3), 120, np.uint8), disc & (yy % 40 < 8), disc)
    pre = Preprocessing(fov_diameter=95)
    assert camera_value(disc, pre) == pytest.approx(2.0, abs=0.02)
    x, target, fov = PatchDataset([sample], pre, patch=32, samples_per_image=2, seed=1, camera_channel=4.0)[0]
    plain, _, _ = PatchDataset([sample], pre, patch=32, samples_per_image=2, seed=1)[0]
    assert x.shape == (2, 32, 32) and np.array_equal(x[0], plain[0]) and np.all(x[1] == np.float32(4.0 * camera_value(disc, pre)))
    one = UNet(UNetConfig(in_channels=1, base_channels=4, depth=2)).eval()
    two = UNet(UNetConfig(in_channels=2, base_channels=4, depth=2)).eval()
    two.load_state_dict(with_inputs(one.state_dict(), 2))
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(one(image), two(torch.cat([image, torch.full_like(image, 2.0)], dim=1)), atol=1e-6)
    assert parse_args(["--data", "x", "--camera-channel", "4"]).camera_channel == 4.0
    assert parse_args(["--data", "x"]).camera_channel == 0.0
    checkpoint = tmp_path / "two.pt"
    torch.save({"format": "vesselseg-checkpoint/1", "model": two.state_dict(), "model_args": two.config.to_dict(), "threshold": 0.5,
                "epoch": 0, "step": 0, "metrics": {}}, checkpoint)
    with pytest.raises(SystemExit):
        ship([str(checkpoint), "--out", str(tmp_path / "shipped.pt")])
    assert not (tmp_path / "shipped.pt").exists()


def test_sample_seed_changes_the_patches_but_not_the_validation_split() -> None:
    from train.__main__ import sample_seed

    assert sample_seed(parse_args(["--data", "x", "--seed", "3"])) == 3
    cfg = parse_args(["--data", "x", "--seed", "3", "--sample-seed", "7"])
    assert (cfg.seed, sample_seed(cfg)) == (3, 7)
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 90**2
    sample = Sample("x/a", np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8), disc & (yy % 20 < 4), disc)
    patches = [PatchDataset([sample], Preprocessing(fov_diameter=180), patch=32, samples_per_image=1, seed=s)[0][0]
               for s in (3, 3, 7)]
    assert np.array_equal(patches[0], patches[1]) and not np.array_equal(patches[0], patches[2])


def test_data_weights_repeat_one_root_training_images_only_and_are_checked() -> None:
    from train.__main__ import weighted

    cfg = parse_args(["--data", "d/DRIVE", "--data", "d/HRF", "--data-weights", "3", "1"])
    assert cfg.data_weights == (3, 1) and cfg.to_dict()["data_weights"] == [3, 1]
    blank = np.zeros((4, 4, 3), np.uint8)
    samples = [Sample(name, blank, blank[..., 0] > 0, blank[..., 0] == 0)
               for name in ("DRIVE/21.tif", "DRIVE/21.tif@512", "HRF/01_h.jpg")]
    names = [s.name for s in weighted(samples, cfg.data, cfg.data_weights)]
    assert names == ["DRIVE/21.tif"] * 3 + ["DRIVE/21.tif@512"] * 3 + ["HRF/01_h.jpg"]
    for bad in (["--data-weights", "2"], ["--data-weights", "0", "1"]):
        with pytest.raises(SystemExit):
            parse_args(["--data", "d/DRIVE", "--data", "d/HRF", *bad])


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_images() -> None:
    from vesselcli.analysis.metrics import bootstrap_interval

    rng = np.random.default_rng(0)
    few, many = rng.normal(0.8, 0.05, 8), rng.normal(0.8, 0.05, 200)
    lo, hi = bootstrap_interval(few)
    assert lo < few.mean() < hi and bootstrap_interval(few) == (lo, hi)  # seeded: reproducible
    lo_many, hi_many = bootstrap_interval(many)
    assert hi_many - lo_many < hi - lo
    # the normal approximation: 1.96 standard errors each side, within 20%
    assert hi_many - lo_many == pytest.approx(2 * 1.96 * many.std() / np.sqrt(many.size), rel=0.2)
    assert bootstrap_interval([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))


@pytest.mark.data
def test_hrf_training_split_is_found_with_full_resolution_annotations(hrf_root: Path) -> None:
    from vesselcli.io.imageio import read_mask

    triples = find_training_files(hrf_root)
    assert len(triples) == 15
    assert {t[0].stem.split("_")[1] for t in triples} == {"h", "dr", "g"}
    assert all(t[1].stem == t[0].stem and t[2].stem == t[0].stem + "_mask" for t in triples)
    assert read_mask(triples[0][1]).shape == (2336, 3504)


def test_ship_can_replace_the_threshold_and_records_where_it_came_from(tmp_path: Path) -> None:
    from train.ship import SHIPPED
    from train.ship import main as ship
    from vesselcli.network.checkpoint import read_checkpoint

    out = tmp_path / "shipped.pt"
    assert ship([str(SHIPPED), "--out", str(out), "--threshold", "0.4", "--threshold-source", "validation sweep"]) == 0
    data, original = read_checkpoint(out), read_checkpoint(SHIPPED)
    assert data["threshold"] == 0.4 and data["threshold_from_training"] == original["threshold"]
    assert data["threshold_source"] == "validation sweep"
    assert load_model(out)[1]["threshold"] == 0.4
    with pytest.raises(SystemExit):
        ship([str(SHIPPED), "--out", str(out), "--threshold", "1.5"])


def test_leave_out_drops_matching_training_images_and_refuses_a_pattern_that_matches_none() -> None:
    from train.data import Sample, leave_out

    blank = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool), np.ones((4, 4), bool)
    samples = [Sample(name, *blank) for name in ("HRF/01_h.jpg", "HRF/01_g.jpg", "HRF/01_dr.JPG", "DRIVE/21_training.tif")]
    kept, left = leave_out(samples, ("HRF/*_g.*", "HRF/*_dr.*"))
    assert [s.name for s in kept] == ["HRF/01_h.jpg", "DRIVE/21_training.tif"]
    assert [s.name for s in left] == ["HRF/01_g.jpg", "HRF/01_dr.JPG"]
    with pytest.raises(ValueError, match="matches no training image"):
        leave_out(samples, ("HRF/*_glaucoma.*",))
    assert parse_args(["--data", "d/HRF", "--leave-out", "HRF/*_g.*", "HRF/*_dr.*"]).leave_out == ("HRF/*_g.*", "HRF/*_dr.*")
