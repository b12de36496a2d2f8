"""export_labels.py end to end: the results JSON, --overwrite, skipped images, and bad input exiting 2."""

from __future__ import annotations

import json
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
