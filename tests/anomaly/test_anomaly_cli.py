"""anomaly.py end to end on synthetic data: the results JSON and its schema, figures, the saved detector and
``--load --images``; bad input exits 2 with one line and writes no JSON."""

from __future__ import annotations

import re
import shutil

import pytest

import anomaly
from inspectkit.cli import run
from inspectkit.results import read_json

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
    scores = read_json(tmp_path / "anomaly_scores_photos.json")
    assert len(scores["scores"]) == 4 and scores["threshold"] is not None
    assert all(row["anomalous"] for row in scores["scores"])  # every hole is above the fitted threshold


@pytest.mark.parametrize(("flags", "match"), [
    (["--coreset-ratio", "0"], "--coreset-ratio"),
    (["--coreset-ratio", "1.5"], "--coreset-ratio"),
    (["--arch", "resnet_nonsense"], "unknown --arch"),
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
    exits_2(["--load", detector, "--images", empty, "--out", tmp_path], capsys, "no images")
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
