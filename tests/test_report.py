"""results.csv: exact columns, whole rows, round trips, resume reading; exit codes from the tally."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselcli.run.report import COLUMNS, CsvMismatchError, ImageResult, Report, ResultsWriter, read_rows


MORPHOLOGY = ("vessel_length_px", "mean_width_px", "branch_points", "end_points", "segments", "tortuosity",
              "fractal_dimension", "vessel_length_mm", "mean_width_um")


def test_every_run_has_the_one_header_of_the_readme() -> None:
    assert COLUMNS == ("image", "width", "height", "laterality", "pixel_size_um",
                       "fov_pixels", "vessel_pixels", "vessel_density", *MORPHOLOGY,
                       "iou", "dice", "sensitivity", "specificity", "accuracy", "auc",
                       "gt_mean_width_px", "width_ratio", "seconds", "status", "error")
    # a row without ground truth has every column, the figure cells empty
    row = ImageResult("a.png", "ok", 1.0, 565, 584, 1000, 120).row()
    assert tuple(row) == COLUMNS
    truth_columns = ("iou", "dice", "sensitivity", "specificity", "accuracy", "auc", "gt_mean_width_px", "width_ratio")
    assert [row[c] for c in truth_columns] == [""] * 8


def test_morphology_cells_are_counts_as_whole_numbers_and_empty_when_not_applicable() -> None:
    figures = {"vessel_length_px": 199.0, "mean_width_px": 1.005, "branch_points": 3, "end_points": 4,
               "segments": 6, "tortuosity": None, "fractal_dimension": 1.25, "vessel_length_mm": None,
               "mean_width_um": None}
    row = ImageResult("a.png", "ok", 1.0, 10, 10, 100, 20, morphology=figures).row()
    assert (row["branch_points"], row["end_points"], row["segments"]) == ("3", "4", "6")
    assert row["vessel_length_px"] == "199.000000" and row["tortuosity"] == "" and row["vessel_length_mm"] == ""
    assert ImageResult("b.png", "error", 0.1, error="x").row()["vessel_length_px"] == ""


def ok(name: str, **figures: float) -> ImageResult:
    return ImageResult(name, "ok", 1.25, 565, 584, 1000, 120, figures or None)


def test_a_row_holds_density_figures_and_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path, [])
    writer.append(ok("a.png", iou=0.5, dice=2 / 3, sensitivity=1.0, specificity=0.9, accuracy=0.95, auc=float("nan")))
    writer.append(ImageResult("b, \"odd\".png", "error", 0.01, error="broken\nfile:\tdamaged"))
    writer.close()
    rows = list(csv.DictReader(path.open(newline="")))
    assert rows[0]["vessel_density"] == "0.120000" and rows[0]["dice"] == "0.666667" and rows[0]["auc"] == ""
    assert rows[0]["status"] == "ok" and rows[0]["error"] == ""
    assert rows[1]["image"] == "b, \"odd\".png" and rows[1]["width"] == "" and rows[1]["iou"] == ""
    assert rows[1]["error"] == "broken file: damaged" and rows[1]["status"] == "error"
    assert path.read_text().count("\n") == 3


def test_each_row_is_on_disk_as_soon_as_it_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path, [])
    writer.append(ok("a.png"))
    assert [r["image"] for r in read_rows(path)] == ["a.png"]  # before close
    writer.close()


def test_a_torn_last_line_and_short_rows_are_ignored_when_resuming(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    header = ",".join(COLUMNS)
    whole = ",".join(ok("a.png").row()[c] for c in COLUMNS)
    path.write_text(f"{header}\n{whole}\nshort,row\nb.png,565,584,10")
    assert [r["image"] for r in read_rows(path)] == ["a.png"]


def test_a_csv_of_an_older_version_is_refused_with_what_differs_and_advice(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    old_header = ("image", "width", "height", "fov_pixels", "vessel_pixels", "vessel_density", "seconds", "status", "error")
    path.write_text(",".join(old_header) + "\na.png,565,584,1000,120,0.12,1.0,ok,\n")
    with pytest.raises(CsvMismatchError, match="not written by this version") as caught:
        read_rows(path)
    assert "it lacks laterality,pixel_size_um,vessel_length_px,mean_width_px," in str(caught.value)
    assert "iou,dice,sensitivity,specificity,accuracy,auc" in str(caught.value)
    assert "--overwrite" in str(caught.value) and "another --out" in str(caught.value)
    assert read_rows(tmp_path / "none.csv") == []


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=20)


@settings(max_examples=150, deadline=None)
@given(names=st.lists(text.filter(lambda s: s.strip() == s and s), min_size=1, max_size=6, unique=True),
       errors=st.lists(text, min_size=6, max_size=6), kept=st.integers(0, 6))
def test_rows_round_trip_through_the_file(tmp_path_factory, names, errors, kept) -> None:
    path = tmp_path_factory.mktemp("csv") / "results.csv"
    old = [ImageResult(n, "error", 0.5, error=e).row() for n, e in zip(names, errors)][:kept]
    writer = ResultsWriter(path, old)
    fresh = [ok(f"new-{n}", iou=0.25, dice=0.4, sensitivity=0.5, specificity=0.75, accuracy=0.8, auc=0.9) for n in names]
    for result in fresh:
        writer.append(result)
    writer.close()
    back = read_rows(path)
    assert back == old + [r.row() for r in fresh]


@pytest.mark.parametrize(("tally", "code"), [
    (dict(total=3, done=3), 0),
    (dict(total=3, done=1, skipped=2), 0),
    (dict(total=3, done=2, failed=1), 1),
    (dict(total=3, done=2), 1),  # one never done: the run stopped early
    (dict(total=3, done=3, fatal="disk full"), 1),
    (dict(total=3, done=1, interrupted_by=2), 130),
    (dict(total=3, done=1, interrupted_by=15), 143),
])
def test_the_exit_code_follows_the_tally(tally, code) -> None:
    assert Report(**tally).exit_code == code


def test_the_report_means_only_count_images_done() -> None:
    report = Report(total=3)
    report.add(ok("a", iou=0.5, dice=0.6, sensitivity=1, specificity=1, accuracy=1, auc=1))
    report.add(ok("b", iou=0.7, dice=0.8, sensitivity=1, specificity=1, accuracy=1, auc=1))
    report.add(ImageResult("c", "error", 0.0, error="x"))
    assert (report.done, report.failed, report.remaining) == (2, 1, 0)
    assert report.mean_iou == pytest.approx(0.6) and report.mean_dice == pytest.approx(0.7)
    assert report.mean_density == pytest.approx(0.12)


@settings(max_examples=100, deadline=None)
@given(raw=st.lists(st.one_of(st.binary(min_size=1, max_size=12), st.text(min_size=1, max_size=6).map(
           lambda t: t.encode("utf-8", "surrogatepass"))).filter(lambda b: b"/" not in b and b"\x00" not in b),
                    min_size=1, max_size=5, unique=True),
       cut=st.floats(0.0, 1.0))
def test_a_results_file_cut_anywhere_reads_back_as_whole_rows(tmp_path_factory, raw, cut) -> None:
    """Names as any file system gives them; the file cut at any byte (a crash) loses only the last row."""
    import os

    from vesselcli.io.discover import Source, assign_names

    items = assign_names([Source(Path("/in") / os.fsdecode(r), Path("/in"), os.fsdecode(r)) for r in raw])
    path = tmp_path_factory.mktemp("csv") / "results.csv"
    writer = ResultsWriter(path, [])
    results = [ok(item.name) for item in items] + [ImageResult("x", "error", 0.1, error=f"bad {items[0].name}\n")]
    for result in results:
        writer.append(result)
    writer.close()
    whole = [r.row() for r in results]
    assert read_rows(path) == [row for row in whole]
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1  # the header is written whole, atomically, with the kept rows
    path.write_bytes(data[: header_end + int((len(data) - header_end) * cut)])
    back = read_rows(path)
    assert back == [row for row in whole[: len(back)]]


def test_a_row_cut_inside_a_multibyte_character_is_dropped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultsWriter(path, [])
    writer.append(ok("a.png"))
    writer.append(ok("ünïcode.png"))
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: data.index("ü".encode()) + 1])  # a crash mid-character
    assert [r["image"] for r in read_rows(path)] == ["a.png"]
