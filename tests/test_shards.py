"""Static shards and ``vesselseg merge``: the arithmetic, the parts, every refusal, and the
Must-show: two shards run concurrently into one OUT, then merged, equal a one-process run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from run_checks import assert_same_outputs, copy_drive, rows_without_seconds
from segment_fakes import DarkIsVessel, fundus, write_fundus
from vesselcli.run import pipeline
from vesselcli.cli import main
from vesselcli.run.config import SegmentConfig
from vesselcli.io.lock import LockedError
from vesselcli.run.merge import MergeError, merge
from vesselcli.run.runrecord import SettingsMismatchError
from vesselcli.run.shards import Shard, ShardError, parse_shard, select, shard_from_env, shard_of

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"sub{i % 7}/img_{i:05d}.png" for i in range(2000)]


# -- the arithmetic -------------------------------------------------------------------------
def test_every_image_is_in_exactly_one_shard_and_the_shards_are_balanced() -> None:
    for count in (1, 2, 3, 8):
        shards = [select(NAMES, Shard(i, count), name_of=str) for i in range(count)]
        assert sorted(n for s in shards for n in s) == sorted(NAMES)
        assert all(abs(len(s) - len(NAMES) / count) < 0.2 * len(NAMES) / count for s in shards)


def test_a_growing_folder_moves_no_image_to_another_shard() -> None:
    before = {n: shard_of(n, 4) for n in NAMES[:500]}
    grown = NAMES[1000:] + NAMES[:500]  # new names, other order
    assert {n: shard_of(n, 4) for n in grown if n in before} == before
    # the key is the name itself, fixed for ever (a stored value, so a change of hash is caught)
    assert [shard_of(f"{i:02d}_test.tif", 2) for i in (1, 2, 4, 6)] == [1, 1, 0, 0]


def test_shard_text_and_the_schedulers_environments() -> None:
    assert parse_shard("3/8", {}) == Shard(3, 8)
    assert str(Shard(3, 8)) == "3/8" and Shard(3, 8).tag == "3-of-8"
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard("auto", slurm) == Shard(6, 8)  # --array=1-8
    stepped = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_STEP": "2"}
    assert shard_from_env(stepped) == Shard(2, 3)  # --array=0-4:2
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}) == Shard(1, 4)  # torchrun
    for text, message in (("4/4", "numbered 0 to 3"), ("1-4", "write I/N"), ("0/0", "at least 1"), ("a/b", "write I/N")):
        with pytest.raises(ShardError, match=message):
            parse_shard(text, {})
    with pytest.raises(ShardError, match="SLURM_ARRAY_TASK_ID.*RANK and WORLD_SIZE"):
        parse_shard("auto", {"PATH": "/bin"})


# -- parts and merge with a numpy engine -------------------------------------------------------
def images(tmp_path: Path, count: int = 8) -> Path:
    src = tmp_path / "in"
    for i in range(count):
        write_fundus(src / f"d{i % 2}" / f"im{i}.png", 70 + i, 80, seed=i)
    return src


def config(tmp_path: Path, out: str, shard: Shard | None = None, **options) -> SegmentConfig:
    return SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / out, tile_size=64, tile_overlap=16, batch_size=3,
                         shard=shard, **options)


def run(cfg: SegmentConfig, **kwargs):
    return pipeline.run(cfg, pipeline.plan(cfg), DarkIsVessel(), **kwargs)


def test_shards_merged_equal_one_process_and_record_what_they_did(tmp_path: Path) -> None:
    images(tmp_path)
    run(config(tmp_path, "one"))
    reports = [run(config(tmp_path, "sharded", Shard(i, 3))) for i in range(3)]
    assert sum(r.done for r in reports) == 8 and all(r.exit_code == 0 for r in reports)
    out = tmp_path / "sharded"
    assert not (out / "results.csv").exists()  # only parts until merged
    record = json.loads((out / "parts" / "run-1-of-3.json").read_text())
    assert record["shard"] == "1/3" and record["complete"] and record["settings"]["threshold"] == 0.5
    assert all(shard_of(name, 3) == 1 for _, name in record["images"])
    report, count = merge(out)
    assert (report.done, report.failed, count) == (8, 0, 3)
    assert_same_outputs(tmp_path / "one", out)
    summary = json.loads((out / "run.json").read_text())
    assert summary["settings"] == record["settings"] and summary["counts"] == {"done": 8, "failed": 0, "skipped": 0}
    assert summary["shards"] == 3 and summary["engine"] == "fake"


def test_a_shard_resumes_alone_and_merge_refuses_it_until_complete(tmp_path: Path) -> None:
    images(tmp_path, 24)
    stop = threading.Event()
    cfg = config(tmp_path, "out", Shard(0, 2), workers=1)
    first = run(cfg, on_result=lambda result: stop.set(), stop=stop)
    assert first.done and first.remaining > 0
    run(config(tmp_path, "out", Shard(1, 2)))
    with pytest.raises(MergeError, match=r"shard 0/2 is not complete .*--shard 0/2"):
        merge(tmp_path / "out")
    again = run(cfg)
    assert again.skipped == first.done and again.done + again.skipped == len(pipeline.plan(cfg).items)
    assert merge(tmp_path / "out")[0].done == 24


def test_merge_refuses_a_missing_or_duplicated_shard_and_writes_nothing(tmp_path: Path) -> None:
    images(tmp_path)
    out = tmp_path / "out"
    run(config(tmp_path, "out", Shard(0, 2)))
    with pytest.raises(MergeError, match=r"shard 1/2 is missing .*--shard 1/2"):
        merge(out)
    run(config(tmp_path, "out", Shard(1, 2)))
    for kind in ("run", "results"):  # shard 0's part copied over shard 1's
        suffix = "json" if kind == "run" else "csv"
        shutil.copy(out / "parts" / f"{kind}-0-of-2.{suffix}", out / "parts" / f"{kind}-1-of-2.{suffix}")
    with pytest.raises(MergeError, match=r"image d\d/im\d\.png is in shards 0/2 and 1/2"):
        merge(out)
    assert not (out / "results.csv").exists() and not (out / "run.json").exists()


def test_merge_refuses_other_settings_and_mixed_shard_counts(tmp_path: Path) -> None:
    images(tmp_path)
    run(config(tmp_path, "out", Shard(0, 2)))
    run(config(tmp_path, "out", Shard(1, 2), threshold=0.6))
    with pytest.raises(MergeError, match=r"shard 1/2 ran with other settings than shard 0/2 \(threshold: 0.5 vs 0.6\)"):
        merge(tmp_path / "out")
    run(config(tmp_path, "out", Shard(2, 3)))
    with pytest.raises(MergeError, match=r"shards of different counts \(2: 0/2, 1/2; 3: 2/3\)"):
        merge(tmp_path / "out")


def test_a_shard_resumed_with_other_settings_is_refused_unless_overwrite(tmp_path: Path) -> None:
    images(tmp_path)
    run(config(tmp_path, "out", Shard(0, 2)))
    with pytest.raises(SettingsMismatchError, match=r"shard 0/2 .*threshold: 0.5 -> 0.7.*--overwrite"):
        run(config(tmp_path, "out", Shard(0, 2), threshold=0.7))
    assert run(config(tmp_path, "out", Shard(0, 2), threshold=0.7, overwrite=True)).done


def test_shards_share_the_output_folder_but_not_with_a_whole_run_or_themselves(tmp_path: Path) -> None:
    images(tmp_path)
    holding = threading.Event()
    release = threading.Event()

    def hold(result) -> None:  # noqa: ANN001
        holding.set()
        release.wait(10)

    worker = threading.Thread(target=lambda: run(config(tmp_path, "out", Shard(0, 2)), on_result=hold))
    worker.start()
    try:
        assert holding.wait(10)
        assert run(config(tmp_path, "out", Shard(1, 2))).done  # another shard runs beside it
        with pytest.raises(LockedError):
            run(config(tmp_path, "out", Shard(0, 2)))  # the same shard twice
        with pytest.raises(LockedError):
            run(config(tmp_path, "out"))  # a whole run
        with pytest.raises(LockedError):
            merge(tmp_path / "out")  # a merge while a shard writes
    finally:
        release.set()
        worker.join()


def test_merge_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    images(tmp_path)
    run(config(tmp_path, "out", Shard(1, 2)))
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "error: shard 0/2 is missing" in result.output and "nothing merged" in result.output
    run(config(tmp_path, "out", Shard(0, 2)))
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "out")])
    assert result.exit_code == 0 and "vesselseg merge" in result.output
    bad = CliRunner().invoke(main, ["segment", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--shard", "2/2"])
    assert bad.exit_code == 2 and "numbered 0 to 1" in bad.output


# -- --keep-identifiers: one identifiers part per shard, merged like results.csv ----------------------
def dicom_images(tmp_path: Path, count: int = 6) -> Path:
    """``count`` single-frame DICOM photographs, one two-frame object and one PNG under ``in``."""
    pytest.importorskip("pydicom", reason="DICOM inputs need pydicom (pip install 'vesselseg[dicom]')")
    import dicom_factory as make

    src = tmp_path / "in"
    for i in range(count):
        make.save(make.photograph(fundus(70 + i, 80, seed=i), f"1.2.826.0.1.3680043.8.498.{300 + i}"),
                  src / f"d{i % 2}" / f"im{i}.dcm")
    frames = [fundus(76, 84, seed=40), fundus(76, 84, seed=41)]
    make.save(make.photograph(frames[0], "1.2.826.0.1.3680043.8.498.399", frames=frames), src / "multi.dcm")
    write_fundus(src / "plain.png", 72, 80, seed=9)  # not DICOM: no identifiers row
    return src


def test_keep_identifiers_with_shards_merges_to_the_one_process_file(tmp_path: Path) -> None:
    dicom_images(tmp_path)
    run(config(tmp_path, "one", keep_identifiers=True))
    expected = (tmp_path / "one" / "identifiers.csv").read_bytes()
    assert expected.count(b"\n") == 1 + 6 + 2  # the header, six objects, two frames
    names = [i.name for i in pipeline.plan(config(tmp_path, "one")).items]
    assert {shard_of(n, 2) for n in names if n.endswith(".dcm")} == {0, 1}, "both shards must have DICOM images"
    stop = threading.Event()  # shard 0 stopped after its first image, then resumed
    first = run(config(tmp_path, "out", Shard(0, 2), keep_identifiers=True, workers=1), stop=stop,
                on_result=lambda result: stop.set())
    assert first.done and first.remaining
    run(config(tmp_path, "out", Shard(0, 2), keep_identifiers=True))
    run(config(tmp_path, "out", Shard(1, 2), keep_identifiers=True))
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "parts").glob("identifiers-*")) == ["identifiers-0-of-2.csv",
                                                                           "identifiers-1-of-2.csv"]
    assert not (out / "identifiers.csv").exists()  # a shard writes only its part
    merge(out)
    assert (out / "identifiers.csv").read_bytes() == expected
    assert_same_outputs(tmp_path / "one", out)


def test_merge_refuses_shards_that_differ_in_keep_identifiers(tmp_path: Path, fake_engine) -> None:  # noqa: ANN001
    dicom_images(tmp_path, 4)
    segment = ["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q"]
    kept = CliRunner().invoke(main, [*segment, "--shard", "0/2", "--keep-identifiers"])
    assert kept.exit_code == 0, kept.output
    assert (tmp_path / "out" / "parts" / "identifiers-0-of-2.csv").is_file()
    assert CliRunner().invoke(main, [*segment, "--shard", "1/2"]).exit_code == 0
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "shard 1/2 ran with other settings than shard 0/2 (identifiers: True vs None)" in result.output
    assert not (tmp_path / "out" / "identifiers.csv").exists() and not (tmp_path / "out" / "results.csv").exists()
    (tmp_path / "out" / "parts" / "identifiers-0-of-2.csv").unlink()
    again = CliRunner().invoke(main, [*segment, "--shard", "1/2", "--keep-identifiers", "--overwrite"])
    assert again.exit_code == 0, again.output
    missing = CliRunner().invoke(main, ["merge", str(tmp_path / "out")])
    assert missing.exit_code == 1 and "parts/identifiers-0-of-2.csv is missing" in missing.output
    from vesselcli.run.report import IDENTIFIER_COLUMNS, write_rows

    write_rows(tmp_path / "out" / "parts" / "identifiers-0-of-2.csv", [{"image": "d0/elsewhere.dcm"}], IDENTIFIER_COLUMNS)
    stray = CliRunner().invoke(main, ["merge", str(tmp_path / "out")])
    assert stray.exit_code == 1 and "names 1 image(s) without an ok row (d0/elsewhere.dcm)" in stray.output


# -- the Must-show, with the shipped model on real images -----------------------------------------
@pytest.mark.data
@pytest.mark.slow
def test_two_concurrent_shard_processes_then_merge_equal_one_process(tmp_path: Path, drive_root: Path,
                                                                     model_file: Path) -> None:
    src = copy_drive(drive_root, tmp_path / "in")
    one = CliRunner().invoke(main, ["segment", str(src), "-o", str(tmp_path / "one"), "--model", str(model_file), "-q"])
    assert one.exit_code == 0, one.output
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shards = [subprocess.Popen([sys.executable, "-m", "vesselcli", "segment", str(src), "-o", str(tmp_path / "out"),
                                "--model", str(model_file), "--shard", f"{i}/2", "-q"], env=env,
                               stderr=subprocess.PIPE, text=True) for i in range(2)]
    for process in shards:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    merged = CliRunner().invoke(main, ["merge", str(tmp_path / "out"), "-q"])
    assert merged.exit_code == 0, merged.output
    assert_same_outputs(tmp_path / "one", tmp_path / "out")
    assert [r["image"] for r in rows_without_seconds(tmp_path / "out" / "results.csv")] == sorted(
        p.name for p in src.iterdir())


def test_a_results_file_is_put_in_input_order_when_a_run_ends(tmp_path: Path) -> None:
    from vesselcli.run.report import ImageResult, ResultsWriter, read_rows, rewrite_in_order

    path = tmp_path / "results.csv"
    writer = ResultsWriter(path, [{"image": "old.png", "status": "ok"}])  # a row of an earlier run's input
    for name in ("c.png", "a.png", "b.png"):  # the order workers happened to finish in
        writer.append(ImageResult(name, "ok", 0.1))
    writer.close()
    rewrite_in_order(path, ["a.png", "b.png", "c.png"])
    assert [r["image"] for r in read_rows(path)] == ["a.png", "b.png", "c.png", "old.png"]


def test_scale_out_usage_errors_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images(tmp_path, 1)
    segment = ["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    both = CliRunner().invoke(main, [*segment, "--shard", "0/2", "--ray", "local"])
    assert both.exit_code == 2 and "--shard and --ray do not go together" in both.output
    actors = CliRunner().invoke(main, [*segment, "--ray-actors", "2"])
    assert actors.exit_code == 2 and "only applies with --ray" in actors.output
    from vesselcli.run import ray_data

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ray_data.RayError, match=r"pip install 'vesselseg\[ray\]'"):
        ray_data.connect("local")
