"""export_labels.py end to end: the results JSON, --overwrite, skipped images, and bad input exiting 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script
from PIL import Image

import export_labels

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def _run(argv, capsys):
    """Run export_labels.py in-process like the shell would; return (exit code, stdout, stderr)."""
    return run_script(export_labels, [*argv, "--no-progress"], capsys)


def _args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data-root", str(root), "--category", "demo", "--out", str(tmp_path / "out"),
            "--results", str(tmp_path / "results"), *extra]


def test_export_writes_results_json_and_overwrite_replaces_only_exports(synthetic_root, tmp_path, capsys):
    code, out, err = _run(_args(synthetic_root, tmp_path, "--format", "yolo", "sam"), capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "results" / "export_demo.json").read_text())
    assert sorted(data["formats"]) == ["sam", "yolo"] and not (tmp_path / "out" / "coco").exists()
    assert data["instances"]["total"] == 15 and data["provenance"]["seed"] == 0
    assert data["provenance"]["data_root"] == str(synthetic_root)
    assert "15 instances" in out

    code, _, err = _run(_args(synthetic_root, tmp_path, "--format", "coco"), capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = _run(_args(synthetic_root, tmp_path, "--format", "coco", "--overwrite"), capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coco", "export_summary.json", "splits_demo.json"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = _run([*_args(synthetic_root, tmp_path), "--out", str(foreign), "--overwrite"], capsys)
    assert code == 2 and "did not write" in err and (foreign / "notes.txt").read_text() == "mine"


def test_an_empty_mask_is_skipped_with_a_warning_and_counted(editable_root, tmp_path, capsys):
    mask = editable_root / "demo/ground_truth/hole/001_mask.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    code, _, err = _run(_args(editable_root, tmp_path, "--format", "yolo"), capsys)
    assert code == 0
    assert "warning: skipped test/hole/001.png: empty mask" in err
    data = json.loads((tmp_path / "results" / "export_demo.json").read_text())
    assert data["images"]["skipped_by_reason"] == {"empty mask": 1}
    assert data["instances"]["per_class"]["hole"] == 3
    assert not list((tmp_path / "out" / "yolo" / "images").glob("*/test__hole__001.png"))


def test_a_category_without_ground_truth_exits_2_and_writes_nothing(editable_root, tmp_path, capsys):
    shutil.rmtree(editable_root / "demo/ground_truth")
    code, _, err = _run(_args(editable_root, tmp_path), capsys)
    assert code == 2 and "ground_truth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "results" / "export_demo.json").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--min-area", "0"], "--min-area"),
    (["--imgsz", "64", "--link", "sym"], "--imgsz"),
    (["--splits", "no/such/splits.json"], "--splits"),
    (["--box-jitter", "1.5"], "--box-jitter"),
])
def test_bad_flags_exit_2(synthetic_root, tmp_path, capsys, extra, message):
    code, _, err = _run([*_args(synthetic_root, tmp_path), *extra], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_out_inside_the_data_is_refused_from_the_shell(editable_root, tmp_path):
    before = sorted(p.relative_to(editable_root) for p in editable_root.rglob("*"))
    result = subprocess.run([sys.executable, "export_labels.py", "--data-root", str(editable_root), "--category",
                             "demo", "--out", str(editable_root / "demo" / "exports"), "--results",
                             str(tmp_path), "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "inside the dataset folder" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.relative_to(editable_root) for p in editable_root.rglob("*")) == before


@pytest.mark.parametrize("results, says", [("a_file", "--results {tmp}/a_file is a file, not a folder"),
                                           ("a_file/results", "cannot write to --results {tmp}/a_file/results: "
                                                              "a folder above it is a file")])
def test_a_results_path_that_cannot_be_a_folder_names_results(results, says, synthetic_root, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    argv = ["--data-root", str(synthetic_root), "--category", "demo", "--out", str(tmp_path / "out"),
            "--results", str(tmp_path / results)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and says.format(tmp=tmp_path) in err and "--out" not in err.splitlines()[-1]


def test_a_negative_seed_is_refused_naming_the_flag(synthetic_root, tmp_path, capsys):
    code, _, err = _run([*_args(synthetic_root, tmp_path), "--seed", "-3"], capsys)
    assert code == 2 and "argument --seed: must be >= 0, got -3" in err


# -- issue 21: names that are not UTF-8, flags of formats not chosen, files inside the folder the export replaces ----

def test_names_that_are_not_utf8_export_and_round_trip_through_a_saved_split(editable_root, tmp_path, capsys):
    cat = editable_root / "demo"
    os.rename(cat / "test" / "hole" / "000.png", os.fsencode(cat / "test" / "hole") + b"/tr\xe9s.png")
    os.rename(cat / "ground_truth" / "hole" / "000_mask.png",
              os.fsencode(cat / "ground_truth" / "hole") + b"/tr\xe9s_mask.png")
    code, _, err = _run(_args(editable_root, tmp_path, "--format", "coco", "sam"), capsys)
    assert code == 0, err
    out = tmp_path / "out"
    coco = [json.loads(p.read_bytes().decode("utf-8")) for p in (out / "coco" / "annotations").glob("*.json")]
    names = [image["file_name"] for data in coco for image in data["images"]]
    assert "test__hole__tr%E9s.png" in names  # the file on disk has this plain UTF-8 name too
    assert all((out / "coco" / "images").rglob(name) for name in names)
    lines = [json.loads(line) for p in (out / "sam").glob("*.jsonl")
             for line in p.read_bytes().decode("utf-8").splitlines()]
    assert "test/hole/tr\\xe9s.png" in {line["source_file"] for line in lines}
    manifest = tmp_path / "splits_demo.json"
    shutil.copy(out / "splits_demo.json", manifest)  # written in visible form; read back, it still matches
    code, _, err = _run([*_args(editable_root, tmp_path, "--format", "coco"), "--out", str(tmp_path / "again"),
                         "--splits", str(manifest)], capsys)
    assert code == 0, err
    assert "not in the split manifest" not in err
    summary = json.loads((tmp_path / "again" / "export_summary.json").read_text())
    assert summary["instances"]["total"] == 15


@pytest.mark.parametrize("extra, message", [
    (["--format", "coco", "--sam-mask", "rle"], "--sam-mask does nothing without sam in --format"),
    (["--format", "yolo", "--sam-points", "5", "--box-jitter", "0.1"],
     "--sam-positive and --box-jitter do nothing without sam in --format"),
    (["--format", "sam", "--coco-segmentation", "rle"], "--coco-segmentation does nothing without coco"),
])
def test_flags_of_a_format_not_written_are_refused(extra, message, synthetic_root, tmp_path, capsys):
    code, _, err = _run(_args(synthetic_root, tmp_path, *extra), capsys)
    assert code == 2 and message in err and not (tmp_path / "out").exists()


def test_a_split_manifest_or_results_inside_the_replaced_export_are_refused(synthetic_root, tmp_path, capsys):
    code, _, err = _run(_args(synthetic_root, tmp_path, "--format", "yolo"), capsys)
    assert code == 0, err
    manifest = tmp_path / "out" / "splits_demo.json"
    code, _, err = _run(_args(synthetic_root, tmp_path, "--format", "yolo", "--overwrite", "--splits", str(manifest)),
                        capsys)
    assert code == 2 and "lies inside --out" in err and manifest.is_file()
    code, _, err = _run([*_args(synthetic_root, tmp_path, "--format", "yolo", "--overwrite"), "--results",
                         str(tmp_path / "out" / "results")], capsys)
    assert code == 2 and "--results" in err and "lies inside --out" in err
