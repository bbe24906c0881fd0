"""`vesselseg score` through the real CLI: the DRIVE inter-observer figures, encodings, errors, outputs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from vesselcli.analysis import metrics
from vesselcli.cli import main
from vesselcli.analysis.score import COLUMNS, prediction_kind

H, W = 20, 24
SEGMENT_COLUMNS = ("image", "width", "height", "iou", "dice", "sensitivity", "specificity", "accuracy", "auc", "status", "error")


def run(*args: object) -> Result:
    return CliRunner().invoke(main, ["score", *map(str, args)])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def strict_json(text: str) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=no_constants)


# --- scenes and encodings ---------------------------------------------------------------


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, prediction, fov) ``(H, W) bool``: a prediction that is right most of the time."""
    rng = np.random.default_rng(seed)
    truth = rng.random((H, W)) < 0.3
    pred = truth ^ (rng.random((H, W)) < 0.15)
    yy, xx = np.mgrid[:H, :W]
    fov = ((yy - H / 2) / (H / 2)) ** 2 + ((xx - W / 2) / (W / 2)) ** 2 < 1.0
    return truth, pred, fov


def save_palette(path: Path, indices: np.ndarray, palette: list[int]) -> None:
    img = Image.fromarray(indices.astype(np.uint8), mode="L")
    img.putpalette(palette + [0] * (768 - len(palette)))
    img.save(path, optimize=False)
    # The encoding under test must really be on disk: indices and palette as written.
    back = Image.open(path)
    assert back.mode == "P" and np.array_equal(np.asarray(back), indices.astype(np.uint8))
    assert back.getpalette()[:6] == palette[:6]


def save_mask(path: Path, mask: np.ndarray, encoding: str) -> None:
    """Write ``(H, W) bool`` in one of the encodings annotations come in."""
    m8 = mask.astype(np.uint8)
    if encoding == "0/255":
        Image.fromarray(m8 * 255).save(path)
    elif encoding == "0/1":
        Image.fromarray(m8).save(path)
    elif encoding == "1-bit":
        Image.fromarray(mask).save(path)
        assert Image.open(path).mode == "1"
    elif encoding == "palette 0/1 (DRIVE 2nd_manual)":
        save_palette(path, m8, [4, 2, 4, 252, 254, 252])
    elif encoding == "palette, index 0 white (CHASE FOV)":
        save_palette(path, 1 - m8, [255, 255, 255, 0, 0, 0])
    elif encoding == "rgb":
        Image.fromarray(np.repeat(m8[..., None] * 255, 3, axis=2)).save(path)
    elif encoding == "16-bit":
        Image.fromarray(m8.astype(np.uint16) * 65535).save(path)
        assert Image.open(path).mode.startswith("I;16")
    else:
        raise ValueError(encoding)


ANNOTATIONS = [
    ("0/255", ".png"), ("1-bit", ".png"), ("0/1", ".png"), ("palette 0/1 (DRIVE 2nd_manual)", ".gif"),
    ("0/255", ".pgm"), ("rgb", ".ppm"), ("0/255", ".tif"), ("16-bit", ".tif"), ("0/255", ".bmp"),
]


def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    dirs = tuple(tmp_path / d for d in ("pred", "gt", "fov"))
    for d in dirs:
        d.mkdir()
    return dirs


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """pred/01_test.png (0/255), gt/01_manual1.png (0/255), fov/01_test_mask.gif (CHASE-like palette)."""
    pred, gt, fov = layout(tmp_path)
    truth, prediction, field = scene()
    save_mask(pred / "01_test.png", prediction, "0/255")
    save_mask(gt / "01_manual1.png", truth, "0/255")
    save_mask(fov / "01_test_mask.gif", field, "palette, index 0 white (CHASE FOV)")
    return pred, gt, fov


# --- the must-show figures --------------------------------------------------------------


@pytest.mark.data
def test_drive_second_observer_agreement(drive_root: Path, tmp_path: Path) -> None:
    test = drive_root / "test"
    out = tmp_path / "s.csv"
    result = run(test / "2nd_manual", test / "1st_manual", "--fov", test / "mask", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == 20 and {r["status"] for r in rows} == {"ok"}
    assert {r["prediction"] for r in rows} == {"binary"}  # grey 3/253 palette read as a mask
    assert round(np.mean([float(r["dice"]) for r in rows]), 4) == 0.7881
    assert round(np.mean([float(r["iou"]) for r in rows]), 4) == 0.6508
    mean_row = next(line for line in result.stdout.splitlines() if line.strip().startswith("mean"))
    assert "0.6508" in mean_row and "0.7881" in mean_row
    report = strict_json(run(test / "2nd_manual", test / "1st_manual", "--fov", test / "mask", "--json").stdout)
    assert (round(report["mean"]["dice"], 4), round(report["mean"]["iou"], 4)) == (0.7881, 0.6508)
    # The second observer draws the vessels as wide as the first, to within a few per cent.
    assert round(report["mean"]["width_ratio"], 4) == 0.9786
    assert 2.4 < report["mean"]["gt_mean_width_px"] < 3.0
    assert report["pooled"]["tp"] + report["pooled"]["fn"] == sum(int(r["tp"]) + int(r["fn"]) for r in rows)


# --- encodings --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, ext", ANNOTATIONS)
def test_annotation_encodings(tmp_path: Path, encoding: str, ext: str) -> None:
    pred, gt, fov = layout(tmp_path)
    truth, prediction, field = scene(1)
    save_mask(pred / "01_test.png", prediction, "0/255")
    save_mask(gt / f"01_manual1{ext}", truth, encoding)
    save_mask(fov / "01_test_mask.gif", field, "palette, index 0 white (CHASE FOV)")
    result = run(pred, gt, "--fov", fov, "--json")
    assert result.exit_code == 0, result.output
    row = strict_json(result.stdout)["pairs"][0]
    expected = metrics.confusion(prediction, truth, field)
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (expected.tp, expected.fp, expected.fn, expected.tn)
    assert row["fov_pixels"] == int(field.sum())


BINARY_PREDICTIONS = [
    ("0/255", ".png"), ("0/1", ".png"), ("1-bit", ".png"), ("palette 0/1 (DRIVE 2nd_manual)", ".gif"),
    ("16-bit", ".png"), ("0/255", ".pgm"), ("0/255", ".tif"),
]


@pytest.mark.parametrize("encoding, ext", BINARY_PREDICTIONS)
def test_binary_prediction_encodings(folders: tuple[Path, Path, Path], encoding: str, ext: str) -> None:
    pred, gt, fov = folders
    truth, prediction, field = scene()
    (pred / "01_test.png").unlink()
    save_mask(pred / f"01_test{ext}", prediction, encoding)
    report = strict_json(run(pred, gt, "--fov", fov, "--json").stdout)
    row = report["pairs"][0]
    assert row["prediction"] == "binary"
    assert row["dice"] == pytest.approx(metrics.dice(metrics.confusion(prediction, truth, field)))
    assert row["auc"] is None and row["best_f1"] is None and row["best_threshold"] is None


@pytest.mark.parametrize("bits", [8, 16])
def test_probability_maps(folders: tuple[Path, Path, Path], tmp_path: Path, bits: int) -> None:
    pred, gt, fov = folders
    truth, _, field = scene()
    rng = np.random.default_rng(5)
    top = 2**bits - 1
    values = np.clip(truth * 0.35 + rng.random((H, W)) * 0.65, 0, 1)
    grey = np.round(values * top).astype(np.uint8 if bits == 8 else np.uint16)
    Image.fromarray(grey).save(pred / "01_test.png")
    prob = grey / top
    out = tmp_path / "p.csv"
    result = run(pred, gt, "--fov", fov, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    row = strict_json(result.stdout)["pairs"][0]
    assert row["prediction"] == "probability"
    at_half = metrics.confusion(prob >= 0.5, truth, field)
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (at_half.tp, at_half.fp, at_half.fn, at_half.tn)
    assert row["auc"] == pytest.approx(metrics.roc_auc(prob, truth, field))
    best_threshold, best_f1 = metrics.best_threshold_f1(prob, truth, field)
    assert (row["best_threshold"], row["best_f1"]) == pytest.approx((best_threshold, best_f1))
    assert 0.5 < row["auc"] <= 1.0 and row["best_f1"] >= row["dice"]
    csv_row = read_csv(out)[0]
    assert float(csv_row["auc"]) == pytest.approx(row["auc"], abs=1e-6)


def test_threshold_applies_to_probability_maps_only(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    truth, prediction, field = scene()
    binary = strict_json(run(pred, gt, "--fov", fov, "--json", "--threshold", "0.9").stdout)["pairs"][0]
    assert binary["dice"] == pytest.approx(metrics.dice(metrics.confusion(prediction, truth, field)))
    grey = np.arange(H * W, dtype=np.uint32).reshape(H, W) % 256
    Image.fromarray(grey.astype(np.uint8)).save(pred / "01_test.png")
    for threshold in (0.3, 0.7):
        row = strict_json(run(pred, gt, "--fov", fov, "--json", "--threshold", threshold).stdout)["pairs"][0]
        expected = metrics.confusion(grey / 255 >= threshold, truth, field)
        assert (row["tp"], row["fp"]) == (expected.tp, expected.fp)


def test_prediction_kind_is_decided_by_the_values_present() -> None:
    assert prediction_kind(np.zeros((3, 3), np.uint8)) == "binary"  # empty prediction
    assert prediction_kind(np.full((3, 3), 255, np.uint8)) == "binary"
    assert prediction_kind(np.array([[3, 253], [253, 3]], np.uint8)) == "binary"
    assert prediction_kind(np.array([[0, 65535]], np.uint16)) == "binary"
    assert prediction_kind(np.array([[0, 128, 255]], np.uint8)) == "probability"
    assert prediction_kind(np.array([[0, 1, 2]], np.uint16)) == "probability"


def test_without_fov_the_whole_image_counts(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, _ = folders
    truth, prediction, _ = scene()
    row = strict_json(run(pred, gt, "--json").stdout)["pairs"][0]
    assert row["fov_pixels"] == H * W
    assert row["mcc"] == pytest.approx(metrics.mcc(metrics.confusion(prediction, truth)))


def test_one_fov_file_serves_every_pair(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    truth, prediction, field = scene()
    save_mask(pred / "02_test.png", prediction, "0/255")
    save_mask(gt / "02_manual1.png", truth, "0/255")
    report = strict_json(run(pred, gt, "--fov", fov / "01_test_mask.gif", "--json").stdout)
    assert [r["fov_pixels"] for r in report["pairs"]] == [int(field.sum())] * 2


def test_single_files_pair_whatever_their_names(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    (gt / "01_manual1.png").rename(gt / "reference.png")
    result = run(pred / "01_test.png", gt / "reference.png", "--json")
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["pairs"][0]["annotation"] == "reference.png"


# --- errors, unpaired files, exit codes -------------------------------------------------


def test_size_mismatch_is_an_error_row_naming_both_sizes(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pred, gt, fov = folders
    truth, prediction, field = scene()
    save_mask(pred / "02_test.png", prediction, "0/255")
    save_mask(gt / "02_manual1.png", np.zeros((H, W + 6), bool), "0/255")
    save_mask(fov / "02_test_mask.gif", field, "0/255")
    out = tmp_path / "s.csv"
    result = run(pred, gt, "--fov", fov, "--out", out)
    assert result.exit_code == 1
    rows = {r["image"]: r for r in read_csv(out)}
    assert rows["01_test.png"]["status"] == "ok"
    bad = rows["02_test.png"]
    assert bad["status"] == "error" and bad["dice"] == ""
    assert f"is {W}x{H}" in bad["error"] and f"is {W + 6}x{H}" in bad["error"] and "02_manual1.png" in bad["error"]
    assert (bad["width"], bad["height"]) == (str(W), str(H))
    assert "error: 02_test.png" in result.stderr and f"{W + 6}x{H}" in result.stderr
    # A FOV of another size is refused the same way.
    save_mask(gt / "02_manual1.png", truth, "0/255")
    save_mask(fov / "02_test_mask.gif", np.ones((H + 1, W), bool), "0/255")
    assert run(pred, gt, "--fov", fov, "--out", out).exit_code == 1
    assert f"FOV mask 02_test_mask.gif is {W}x{H + 1}" in {r["image"]: r for r in read_csv(out)}["02_test.png"]["error"]


def test_unreadable_files_and_empty_fov_are_error_rows(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    truth, prediction, _ = scene()
    (pred / "02_test.png").write_bytes(b"not a png")
    save_mask(gt / "02_manual1.png", truth, "0/255")
    save_mask(fov / "02_test_mask.gif", np.ones((H, W), bool), "0/255")
    save_mask(pred / "03_test.png", prediction, "0/255")
    save_mask(gt / "03_manual1.png", truth, "0/255")
    save_mask(fov / "03_test_mask.gif", np.zeros((H, W), bool), "0/255")
    report = strict_json((result := run(pred, gt, "--fov", fov, "--json")).stdout)
    assert result.exit_code == 1
    assert [r["status"] for r in report["pairs"]] == ["ok", "error", "error"]
    assert report["pairs"][1]["error"].startswith("prediction 02_test.png: not a readable image")
    assert "empty" in report["pairs"][2]["error"]
    assert (report["scored"], report["failed"]) == (1, 2)


def test_missing_fov_is_an_error_row_not_a_whole_image_score(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    truth, prediction, _ = scene()
    save_mask(pred / "02_test.png", prediction, "0/255")
    save_mask(gt / "02_manual1.png", truth, "0/255")
    result = run(pred, gt, "--fov", fov, "--json")
    assert result.exit_code == 1
    assert "no FOV mask" in strict_json(result.stdout)["pairs"][1]["error"]


def test_unpaired_files_are_listed(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    truth, prediction, _ = scene()
    save_mask(pred / "03_test.png", prediction, "0/255")
    save_mask(gt / "02_manual1.png", truth, "0/255")
    result = run(pred, gt)
    assert result.exit_code == 0  # what pairs is scored; the rest is listed, not an error
    assert "1 prediction without an annotation: 03_test.png" in result.stderr
    assert "1 annotation without a prediction: 02_manual1.png" in result.stderr
    report = strict_json(run(pred, gt, "--json").stdout)
    assert report["unpaired"] == {"pred": ["03_test.png"], "gt": ["02_manual1.png"]}


def test_ambiguous_pairs_are_error_rows(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, _ = folders
    truth, prediction, _ = scene()
    save_mask(gt / "01_manual2.png", truth, "0/255")  # two observers in one folder
    save_mask(pred / "02_test.png", prediction, "0/255")
    save_mask(pred / "02_test.tif", prediction, "0/255")  # two predictions for one annotation
    save_mask(gt / "02_manual1.png", truth, "0/255")
    result = run(pred, gt, "--json")
    assert result.exit_code == 1
    errors = {r["image"]: r["error"] for r in strict_json(result.stdout)["pairs"]}
    assert "01_manual1.png" in errors["01_test.png"] and "01_manual2.png" in errors["01_test.png"]
    assert "02_manual1.png" in errors["02_test.png"] and errors["02_test.png"] == errors["02_test.tif"]


def test_pattern_option_pairs_other_conventions(tmp_path: Path) -> None:
    pred, gt, _ = layout(tmp_path)
    truth, prediction, _ = scene()
    save_mask(pred / "eye7.png", prediction, "0/255")
    save_mask(gt / "eye7-vessels.png", truth, "0/255")
    result = run(pred, gt)
    assert result.exit_code == 2
    assert "none of the 1 predictions" in result.output and "'eye7'" in result.output and "--pattern" in result.output
    result = run(pred, gt, "--pattern", "{stem}_vessels")
    assert result.exit_code == 2 and "looks for an annotation named 'eye7_vessels'" in result.output
    result = run(pred, gt, "--pattern", "{stem}-vessels", "--json")
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["pairs"][0]["annotation"] == "eye7-vessels.png"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pattern", "manual"], "{stem}"),
        (["--pattern", "{stem}_{name}"], "not a valid pattern"),
        (["--pattern", "{stem}_gt.png"], "without it"),
        (["--threshold", "1.5"], "1.5"),
        (["--fov", "/nonexistent/fov"], "does not exist"),
    ],
)
def test_bad_options_are_usage_errors(folders: tuple[Path, Path, Path], args: list[str], message: str) -> None:
    pred, gt, _ = folders
    result = run(pred, gt, *args)
    assert result.exit_code == 2 and message in result.output


def test_empty_prediction_folder_is_a_usage_error(tmp_path: Path, folders: tuple[Path, Path, Path]) -> None:
    _, gt, _ = folders
    empty = tmp_path / "run"
    (empty / "masks").mkdir(parents=True)
    result = run(empty, gt)
    assert result.exit_code == 2
    assert "holds no images" in result.output and "masks/" in result.output


# --- outputs ----------------------------------------------------------------------------


def test_csv_columns(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pred, gt, fov = folders
    out = tmp_path / "deep" / "s.csv"
    assert run(pred, gt, "--fov", fov, "--out", out).exit_code == 0
    with out.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == COLUMNS
    assert header[:1] == ["image"] and header[-2:] == ["status", "error"]
    assert set(SEGMENT_COLUMNS) <= set(header)  # segment's names where the two overlap
    i = header.index
    assert i("iou") < i("dice") < i("sensitivity") < i("specificity") < i("accuracy") < i("mcc") < i("auc") < i("best_f1") < i("best_threshold")


def test_width_columns_compare_the_calibre_of_mask_and_annotation(tmp_path: Path) -> None:
    pred, gt, fov = layout(tmp_path)
    truth = np.zeros((100, 300), bool)
    truth[40:43, 20:280] = True  # a vessel drawn 3 px wide
    thick = np.zeros_like(truth)
    thick[38:44, 20:280] = True  # found 6 px wide
    save_mask(pred / "01_test.png", thick, "0/255")
    save_mask(gt / "01_manual1.png", truth, "0/255")
    save_mask(pred / "02_test.png", np.zeros_like(truth), "0/255")  # nothing found: no width
    save_mask(gt / "02_manual1.png", truth, "0/255")
    out = tmp_path / "s.csv"
    result = run(pred, gt, "--out", out)
    assert result.exit_code == 0 and "width" in result.stdout
    rows = read_csv(out)
    assert float(rows[0]["mean_width_px"]) == pytest.approx(6, rel=0.03)
    assert float(rows[0]["gt_mean_width_px"]) == pytest.approx(3, rel=0.03)
    assert float(rows[0]["width_ratio"]) == pytest.approx(2, rel=0.03)
    assert rows[1]["mean_width_px"] == "" and rows[1]["width_ratio"] == ""
    report = strict_json(run(pred, gt, "--json").stdout)
    assert report["mean"]["width_ratio"] == pytest.approx(float(rows[0]["width_ratio"]))  # the empty one left out
    # Inside the FOV only: a FOV over half the vessel halves neither width.
    field = np.zeros_like(truth)
    field[:, :150] = True
    save_mask(fov / "01_test_mask.png", field, "0/255")
    save_mask(fov / "02_test_mask.png", field, "0/255")
    assert run(pred, gt, "--fov", fov, "--out", out).exit_code == 0
    halved = read_csv(out)[0]
    assert float(halved["width_ratio"]) == pytest.approx(2, rel=0.05)
    assert int(halved["fov_pixels"]) == 150 * 100


def test_json_shape(folders: tuple[Path, Path, Path]) -> None:
    pred, gt, fov = folders
    truth, prediction, field = scene()
    save_mask(pred / "02_test.png", ~prediction, "0/255")
    save_mask(gt / "02_manual1.png", truth, "0/255")
    save_mask(fov / "02_test_mask.gif", field, "0/255")
    result = run(pred, gt, "--fov", fov, "--json")
    assert result.exit_code == 0
    report = strict_json(result.stdout)  # stdout holds only the JSON
    assert set(report) == {"pred", "gt", "fov", "threshold", "scored", "failed", "mean", "pooled", "pairs", "unpaired"}
    assert (report["scored"], report["failed"], report["threshold"]) == (2, 0, 0.5)
    assert [set(p) for p in report["pairs"]] == [set(COLUMNS)] * 2
    a, b = (metrics.confusion(prediction, truth, field), metrics.confusion(~prediction, truth, field))
    assert report["mean"]["dice"] == pytest.approx((metrics.dice(a) + metrics.dice(b)) / 2)
    assert report["mean"]["auc"] is None  # binary masks have no AUC
    pooled = a + b
    assert {k: report["pooled"][k] for k in ("tp", "fp", "fn", "tn")} == pooled.__dict__
    assert report["pooled"]["dice"] == pytest.approx(metrics.dice(pooled))


def test_auc_undefined_for_an_all_background_truth_is_blank_and_left_out_of_the_mean(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    pred, gt, fov = folders
    truth, _, _ = scene()
    grey = (np.arange(H * W).reshape(H, W) % 200).astype(np.uint8)
    Image.fromarray(grey).save(pred / "01_test.png")
    Image.fromarray(grey).save(pred / "02_test.png")
    save_mask(gt / "02_manual1.png", np.zeros((H, W), bool), "0/255")
    out = tmp_path / "s.csv"
    report = strict_json(run(pred, gt, "--json", "--out", out).stdout)
    assert report["pairs"][1]["auc"] is None and read_csv(out)[1]["auc"] == ""
    assert report["mean"]["auc"] == pytest.approx(report["pairs"][0]["auc"])
