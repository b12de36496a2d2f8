"""stats.py end to end: the JSON schema, figures, --category all, --demo, and every bad input exiting 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_script

import stats

REPO = Path(__file__).resolve().parent.parent


def _run(argv, capsys):
    """Run stats.py in-process like the shell would; return (exit code, stdout, stderr)."""
    return run_script(stats, argv, capsys)


def test_json_has_the_agreed_keys_and_numbers(synthetic_root, tmp_path, capsys):
    out = tmp_path / "results"
    code, stdout, _ = _run(["--category", "demo", "--data-root", str(synthetic_root), "--out", str(out)], capsys)
    assert code == 0
    data = json.loads((out / "stats_demo.json").read_text())
    assert data["category"] == "demo"
    assert data["defect_classes"] == ["hole", "scratch", "stain"] and data["num_defect_classes"] == 3
    assert data["counts"] == {"train": {"good": 12}, "test": {"good": 4, "hole": 4, "scratch": 4, "stain": 4}}
    assert data["num_images"] == 28 and data["split"] == {"train": 12, "test": 16}
    assert data["image_sizes"] == [{"width": 64, "height": 64, "mode": "RGB", "count": 28}]
    for cls in ("hole", "scratch", "stain"):
        area = data["mask_area_fraction"][cls]
        assert 0 < area["min"] <= area["mean"] <= area["max"] < 1
    assert data["problems"] == []
    assert data["provenance"]["demo_data"] is False and data["provenance"]["command"]
    assert data["provenance"]["git_commit"]
    for name in data["figures"].values():
        assert (out / "figures" / name).stat().st_size > 1000
    assert "scratch" in stdout and "64x64 RGB" in stdout


def test_problems_are_reported_and_the_run_goes_on(editable_root, tmp_path, capsys):
    (editable_root / "demo/train/good/000.png").write_bytes(b"")
    (editable_root / "demo/test/hole/notes.txt").write_text("stray")
    code, _, err = _run(["--category", "demo", "--data-root", str(editable_root), "--out", str(tmp_path),
                         "--no-figures"], capsys)
    assert code == 0
    data = json.loads((tmp_path / "stats_demo.json").read_text())
    assert data["counts"]["train"]["good"] == 11
    assert [p["file"] for p in data["problems"]] == ["train/good/000.png"]
    assert data["skipped_files"] == ["test/hole/notes.txt"]
    assert "zero-byte" in err and "skipped 1" in err


def test_category_all_writes_one_json_each_and_an_overview(synthetic_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "demo", root / "one")
    shutil.copytree(synthetic_root / "demo", root / "two")
    code, _, _ = _run(["--category", "all", "--data-root", str(root), "--out", str(tmp_path / "r"),
                       "--no-figures"], capsys)
    assert code == 0
    overview = json.loads((tmp_path / "r/stats_overview.json").read_text())
    assert [c["category"] for c in overview["categories"]] == ["one", "two"]
    assert (tmp_path / "r/stats_one.json").is_file() and (tmp_path / "r/stats_two.json").is_file()


def test_demo_needs_no_data(tmp_path, capsys):
    code, _, _ = _run(["--demo", "--out", str(tmp_path), "--no-figures"], capsys)
    assert code == 0
    data = json.loads((tmp_path / "stats_demo.json").read_text())
    assert data["provenance"]["demo_data"] is True
    assert data["num_defect_classes"] == 3


def _break(root: Path, how: str) -> Path:
    cat = root / "demo"
    if how == "no train/good":
        shutil.rmtree(cat / "train" / "good")
    elif how == "empty test":
        shutil.rmtree(cat / "test")
        (cat / "test" / "good").mkdir(parents=True)
    return root


@pytest.mark.parametrize(("case", "message"), [
    ("missing root", "does not exist"),
    ("unknown category", "unknown category 'hazelnut'.*demo"),
    ("no train/good", "no train/good"),
    ("empty test", "no test images"),
    ("unwritable out", "cannot write to --out"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, message, editable_root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--category", "demo", "--data-root", str(editable_root), "--out", str(out), "--no-figures"]
    if case == "missing root":
        argv[3] = str(tmp_path / "missing")
    elif case == "unknown category":
        argv[1] = "hazelnut"
    elif case == "unwritable out":
        (tmp_path / "a_file").write_text("")
        argv[5] = str(tmp_path / "a_file" / "out")
    else:
        _break(editable_root, case)
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err)
    assert not list(out.glob("**/*.json"))


def test_script_without_data_exits_2_and_says_how_to_get_it(tmp_path):
    """The exact invocation from the README, in a folder with no data, as a user would type it."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "INSPECTKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "stats.py"), "--category", "hazelnut"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "data root 'data' does not exist" in proc.stderr and "stats.py --category hazelnut --download" in proc.stderr
    assert "--download" in proc.stderr and "--demo" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*.json"))


def test_category_all_reports_a_broken_category_and_goes_on(synthetic_root, tmp_path, capsys):
    root = tmp_path / "data"
    for name in ("a_first", "b_broken", "c_last"):
        shutil.copytree(synthetic_root / "demo", root / name)
    shutil.rmtree(root / "b_broken" / "train" / "good")
    code, _, err = _run(["--category", "all", "--data-root", str(root), "--out", str(tmp_path / "r"),
                         "--no-figures"], capsys)
    assert code == 0
    overview = json.loads((tmp_path / "r/stats_overview.json").read_text())
    assert [c["category"] for c in overview["categories"]] == ["a_first", "c_last"]
    assert [b["category"] for b in overview["broken"]] == ["b_broken"]
    assert "has no train/good folder" in overview["broken"][0]["problem"]
    assert "category b_broken skipped" in err and (tmp_path / "r/stats_c_last.json").is_file()
    for name in ("a_first", "c_last"):
        shutil.rmtree(root / name / "test")
    code, _, err = _run(["--category", "all", "--data-root", str(root), "--out", str(tmp_path / "r2"),
                         "--no-figures"], capsys)
    assert code == 2 and "no category under" in err.strip().splitlines()[-1]


def test_a_decompression_bomb_is_a_listed_skipped_image(editable_root, tmp_path, capsys):
    from tests.imagefiles import write_png_claiming

    write_png_claiming(editable_root / "demo/test/good/000.png", 30000, 30000)
    code, _, err = _run(["--category", "demo", "--data-root", str(editable_root), "--out", str(tmp_path)], capsys)
    assert code == 0 and "Traceback" not in err and "DecompressionBomb" not in err
    data = json.loads((tmp_path / "stats_demo.json").read_text())
    assert data["counts"]["test"]["good"] == 3
    (problem,) = [p for p in data["problems"] if p["file"] == "test/good/000.png"]
    assert "900,000,000 pixels, above the limit" in problem["problem"]


@pytest.mark.parametrize("taken", ["figures", "stats_demo.json"])
def test_an_output_path_taken_by_the_wrong_kind_of_entry_is_one_line(taken, synthetic_root, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    if taken == "figures":
        (out / taken).write_text("a file where the figures folder goes")
    else:
        (out / taken).mkdir()
    code, _, err = _run(["--category", "demo", "--data-root", str(synthetic_root), "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"cannot write {out / taken}" in last
    assert ("a parent of it is a file" if taken == "figures" else "it is a folder") in last


def test_download_flags_without_download_are_refused(synthetic_root, tmp_path, capsys):
    code, _, err = _run(["--data-root", str(synthetic_root), "--category", "demo", "--url", "http://x.example/a.tar",
                         "--out", str(tmp_path)], capsys)
    assert code == 2 and "--url does nothing without --download" in err and not list(tmp_path.iterdir())


def test_class_names_with_math_markup_or_bytes_that_are_not_utf8_are_drawn_as_written(editable_root, tmp_path,
                                                                                    capsys):
    """A defect folder named like a matplotlib formula, or with a Latin-1 byte, used to crash the figures."""
    cat = editable_root / "demo"
    for part in ("test", "ground_truth"):
        os.rename(cat / part / "stain", cat / part / r"$\frac{1}{$")
        os.rename(cat / part / "hole", os.fsencode(cat / part) + b"/h\xe9le")
    code, out, err = _run(["--data-root", str(editable_root), "--category", "demo", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "stats_demo.json").read_bytes().decode("utf-8"))
    assert {r"$\frac{1}{$", "h\\xe9le"} <= set(record["class_names"])
    for figure in ("stats_demo_counts.png", "stats_demo_samples.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 1000
    assert "h\\xe9le" in out  # the table prints, the name in its visible form


def test_a_file_name_cannot_forge_a_line_of_the_report(editable_root, tmp_path, capsys):
    (editable_root / "demo/train/good/x\nproblem: all is fine.png").write_bytes(b"")  # damaged, and a newline
    code, _, err = _run(["--category", "demo", "--data-root", str(editable_root), "--out", str(tmp_path),
                         "--no-figures"], capsys)
    assert code == 0
    problems = [line for line in err.split("\n") if line.startswith("problem:")]
    assert problems == ["problem: train/good/x\\x0aproblem: all is fine.png: zero-byte image file; skipped"]
