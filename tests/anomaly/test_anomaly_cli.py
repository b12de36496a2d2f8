"""anomaly.py end to end on synthetic data: the results JSON and its schema, figures, the saved detector and
``--load --images``; bad input exits 2 with one line and writes no JSON."""

from __future__ import annotations

import os
import re
import shutil

import pytest

import anomaly
from inspectkit.cli import run
from inspectkit.results import read_json
from inspectkit.synthetic import make_category

FAST = ["--arch", "mobilenet_v2", "--weights", "none", "--image-size", "128", "--coreset-ratio", "0.1"]


def call(argv):
    parser = anomaly.get_args_parser()
    parser.prog = "anomaly.py"
    run(anomaly.main, parser, [str(a) for a in argv])


def exits_2(argv, capsys, match):
    capsys.readouterr()  # forget earlier output
    with pytest.raises(SystemExit) as exc:
        call(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    message = re.split(r"[\r\n]", err.strip())[-1]  # progress bars redraw with \r; the message comes last
    assert "Traceback" not in err and err.count("error:") == 1
    assert message.startswith("anomaly.py: error:")
    assert match in message
    return message


@pytest.fixture(scope="module")
def finished_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly_out")
    call(["--data-root", synthetic_root, "--category", "demo", *FAST, "--out", out])
    return out


def test_results_json_schema(finished_run):
    result = read_json(finished_run / "anomaly_demo.json")
    keys = {"image_auroc", "pixel_auroc", "pro", "f1_max", "threshold", "per_defect_image_auroc"}
    assert keys <= set(result["metrics"]) and keys <= set(result["baseline"])
    assert set(result["metrics"]["per_defect_image_auroc"]) == {"hole", "scratch", "stain"}
    assert {"decode", "features", "coreset", "scoring", "metrics", "total_s"} <= set(result["timings"])
    assert result["peak_rss_mb"] > 0
    assert result["config"]["arch"] == "mobilenet_v2" and result["config"]["coreset_ratio"] == 0.1
    assert result["provenance"]["weights"]["spec"] == "none" and result["provenance"]["seed"] == 0
    assert result["metrics"]["image_auroc"] > 0.9
    for figure in ("anomaly_demo.png", "anomaly_demo_hist.png"):
        assert (finished_run / "figures" / figure).stat().st_size > 1000


def test_saved_detector_scores_a_folder(finished_run, synthetic_root, tmp_path):
    detector = finished_run / "detectors" / "anomaly_demo_mobilenet_v2.pt"
    folder = tmp_path / "photos"
    shutil.copytree(synthetic_root / "demo" / "test" / "hole", folder)
    call(["--load", detector, "--images", folder, "--out", tmp_path])
    result = read_json(tmp_path / "predictions_photos.json")
    assert len(result["predictions"]) == 4 and result["image_threshold"] is not None
    assert all(row["verdict"] == "defect" for row in result["predictions"])  # every hole is above the threshold


@pytest.mark.parametrize(("flags", "match"), [
    (["--coreset-ratio", "0"], "--coreset-ratio"),
    (["--coreset-ratio", "1.5"], "--coreset-ratio"),
    (["--arch", "resnet_nonsense"], "unknown --arch"),
    (["--false-alarm", "0"], "--false-alarm"),
    (["--false-alarm", "1"], "--false-alarm"),
    (["--validation-share", "1.5"], "--validation-share"),
])
def test_bad_flags_exit_2(flags, match, synthetic_root, tmp_path, capsys):
    exits_2(["--data-root", synthetic_root, "--category", "demo", *FAST, *flags, "--out", tmp_path], capsys, match)
    assert not list(tmp_path.glob("*.json"))


def test_bad_load_and_images_exit_2(finished_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    detector = finished_run / "detectors" / "anomaly_demo_mobilenet_v2.pt"
    exits_2(["--load", tmp_path / "missing.pt", "--images", empty, "--out", tmp_path], capsys, "not found")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    exits_2(["--load", tmp_path / "bad.pt", "--images", finished_run / "figures", "--out", tmp_path], capsys,
            "cannot read detector file")
    exits_2(["--load", detector, "--images", empty, "--out", tmp_path], capsys, "no image files")
    exits_2(["--images", empty, "--out", tmp_path], capsys, "go together")
    assert not list(tmp_path.glob("*.json"))


def test_no_defects_and_no_ground_truth(editable_root, tmp_path, capsys):
    shutil.rmtree(editable_root / "demo" / "ground_truth")
    call(["--data-root", editable_root, "--category", "demo", *FAST, "--no-baseline", "--no-figures",
          "--out", tmp_path])
    result = read_json(tmp_path / "anomaly_demo.json")
    assert result["metrics"]["pixel_auroc"] is None and result["metrics"]["image_auroc"] > 0.9
    assert any("image metrics only" in note for note in result["notes"])
    for defect in ("hole", "scratch", "stain"):
        shutil.rmtree(editable_root / "demo" / "test" / defect)
    exits_2(["--data-root", editable_root, "--category", "demo", *FAST, "--out", tmp_path / "x"], capsys,
            "no defective test images")


def test_without_data_the_data_layer_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exits_2([], capsys, "does not exist")


def test_category_all_runs_every_category_and_reports_a_failed_one(synthetic_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "demo", root / "demo")
    make_category(root, "wide", width=160, height=64, n_train=8, n_test_good=3, n_per_defect=2, seed=2)
    make_category(root, "nodefects", image_size=64, n_train=6, n_test_good=3, n_per_defect=0, seed=3)
    out = tmp_path / "out"
    capsys.readouterr()
    call(["--category", "all", "--data-root", root, *FAST, "--no-figures", "--out", out])
    printed = capsys.readouterr().out
    summary = read_json(out / "anomaly_summary.json")
    rows = {row["category"]: row for row in summary["categories"]}
    assert set(rows) == {"demo", "nodefects", "wide"}
    assert rows["nodefects"]["status"] == "failed" and "no defective test images" in rows["nodefects"]["reason"]
    for name in ("demo", "wide"):
        record = read_json(out / f"anomaly_{name}.json")
        assert rows[name]["image_auroc"] == record["metrics"]["image_auroc"]
        assert rows[name]["baseline_pixel_auroc"] == record["baseline"]["pixel_auroc"]
        assert rows[name]["peak_rss_mb"] > 0 and rows[name]["seconds"] > 0
    assert rows["wide"]["input_shape"] == [96, 192]  # 2.5:1 read as 2:1, not squashed to 128 x 128
    mean = summary["mean"]
    assert mean["categories"] == 2 and mean["failed"] == 1
    assert mean["image_auroc"] == pytest.approx((rows["demo"]["image_auroc"] + rows["wide"]["image_auroc"]) / 2)
    assert summary["provenance"]["git_commit"] and summary["weights"] == "none"
    table = printed[printed.index("category"):]
    assert "mean of 2" in table and "nodefects" in table and "failed" in table
    assert not (out / "anomaly_nodefects.json").exists()


def test_category_all_without_categories_names_the_root(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    message = exits_2(["--category", "all", "--data-root", tmp_path / "empty", *FAST, "--out", tmp_path], capsys,
                      "no category folders")
    assert str(tmp_path / "empty") in message
    assert not list(tmp_path.glob("*.json"))


def test_a_category_with_names_that_are_not_utf8_writes_every_output(editable_root, tmp_path):
    """A Latin-1 file name in test/ (and a formula-like one) used to end the fit in a UnicodeEncodeError after all
    the scoring, with no anomaly_<category>.json and no gallery."""
    cat = editable_root / "demo"
    hole = os.fsencode(cat / "test" / "hole")
    shutil.copy(cat / "test" / "good" / "000.png", os.fsencode(cat / "test" / "good") + b"/caf\xe9.png")
    os.rename(cat / "test" / "hole" / "000.png", hole + b"/tr\xe9s=1.png")
    os.rename(cat / "ground_truth" / "hole" / "000_mask.png",
              os.fsencode(cat / "ground_truth" / "hole") + b"/tr\xe9s=1_mask.png")
    out = tmp_path / "out"
    call(["--data-root", editable_root, "--category", "demo", *FAST, "--no-baseline", "--out", out])
    record = (out / "anomaly_demo.json").read_bytes()
    record.decode("utf-8")
    assert read_json(out / "anomaly_demo.json")["metrics"]["image_auroc"] > 0.5
    gallery = (out / "anomaly_demo.html").read_text(encoding="utf-8")
    assert "test/good/caf\\xe9.png" in gallery and "test/hole/tr\\xe9s=1.png" in gallery
    for figure in ("anomaly_demo.png", "anomaly_demo_hist.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert (out / "detectors" / "anomaly_demo_mobilenet_v2.pt").is_file()


@pytest.mark.parametrize(("flags", "match"), [
    (["--screenshot", "--no-figures"], "--screenshot pictures the gallery"),
    (["--screenshot", "--category", "all"], "--screenshot pictures the gallery of one category"),
    (["--export-file", "m.onnx"], "--export-file does nothing without --load"),
])
def test_fit_flags_that_would_do_nothing_exit_2(flags, match, synthetic_root, tmp_path, capsys):
    exits_2(["--data-root", synthetic_root, "--category", "demo", *FAST, *flags, "--out", tmp_path], capsys, match)
    assert not list(tmp_path.iterdir())


def test_position_flags_are_checked_at_the_boundary(synthetic_root, tmp_path, capsys):
    from helpers import run_script

    import anomaly

    base = ["--data-root", str(synthetic_root), "--category", "demo", "--weights", "none", "--out", str(tmp_path)]
    for extra, message in ((["--scale-power", "1.5"], "--scale-power must be in [0, 1]"),
                           (["--position-norm", "none", "--scale-power", "1"], "does nothing with --position-norm"),
                           (["--map-scale-power", "2"], "--map-scale-power must be in [0, 1]"),
                           (["--position-norm", "row"], "invalid choice: 'row'")):
        code, _, err = run_script(anomaly, base + extra, capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("*.json"))


def test_the_fit_records_where_good_images_peak_and_warns_in_one_line(tmp_path, capsys):
    """A thin frame whose brightness changes from image to image: most held-out good images peak at the border.
    The JSON and the detector file record it, and the run warns in one line on stderr. Unwhitened (--whiten 0):
    with random-init features the whitening alone shrinks the frame's one direction of change and with it the
    effect; the diagnostic, not the whitening, is under test."""
    import json

    import torch
    from helpers import run_script

    import anomaly
    from inspectkit.synthetic import make_category

    make_category(tmp_path / "data", "framed", kind="border", image_size=64, n_train=40, n_test_good=4,
                  n_per_defect=2, seed=0)
    code, _, err = run_script(anomaly, ["--data-root", str(tmp_path / "data"), "--category", "framed", "--weights",
                                        "none", "--image-size", "64", "--coreset-ratio", "0.1", "--no-figures",
                                        "--no-baseline", "--whiten", "0", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    position = json.loads((tmp_path / "out" / "anomaly_framed.json").read_text())["position"]
    assert position["warn"] and position["outer_ring_share_raw"] > 0.5 and position["applied"]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "outermost ring" in warnings[0]
    saved = torch.load(tmp_path / "out" / "detectors" / "anomaly_framed_mobilenet_v2.pt", weights_only=True)
    assert saved["position"]["outer_ring_share_raw"] == position["outer_ring_share_raw"]
