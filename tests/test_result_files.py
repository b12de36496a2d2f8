"""Files from an earlier step, read back: damaged or foreign results name the file and the command that makes them
again; folders of images follow one policy (skip, list, go on); output paths that cannot be written are one line."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
import torchvision
from helpers import run_script
from PIL import Image

import evaluate
import train
from inspectkit import report
from inspectkit.cli import run
from inspectkit.errors import UserError
from inspectkit.results import CSV_FORMULA_START, read_result, write_json
from tests.imagefiles import write_png_claiming


@pytest.fixture(scope="module")
def trained_one(synthetic_root, tmp_path_factory):
    """Attempt 2 trained once (32 px, 1 epoch, 1 split): the smallest results folder evaluate.py accepts."""
    out = tmp_path_factory.mktemp("trained_one") / "results"
    argv = ["--attempt", "2", "--category", "demo", "--data-root", str(synthetic_root), "--image-size", "32",
            "--epochs", "1", "--splits", "1", "--arch", "mobilenet_v2", "--weights", "none", "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSPECTKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setattr(sys, "argv", ["train.py", *argv])
        run(train.main, train.get_args_parser(), argv)
    return out


@pytest.fixture
def results_copy(trained_one, tmp_path):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(trained_one, copy)
    return copy


def _evaluate(argv, capsys):
    return run_script(evaluate, argv, capsys)


@pytest.mark.parametrize("damage, says", [
    ("", "it is empty"),
    ('{"attempt": 2, "categ', "it is not valid JSON"),
    ("{}", "it has no field 'attempt'"),
    ("null", "it holds null, not an object"),
    ("7", "it holds int, not an object"),
    ('{"attempt": 2, "category": "demo", "class_names": [], "splits": [], "config": {"name": 3}}',
     "its field 'config.name' is int, not str"),
])
def test_a_damaged_attempt_file_names_itself_and_the_command(damage, says, results_copy, synthetic_root, capsys):
    (results_copy / "attempt_2.json").write_text(damage)
    code, _, stderr = _evaluate(["--attempt", "2", "--category", "demo", "--data-root", str(synthetic_root),
                                 "--out", str(results_copy)], capsys)
    assert code == 2 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert f"{results_copy / 'attempt_2.json'} is damaged" in stderr and says in stderr
    assert f"python train.py --attempt 2 --out {results_copy}" in stderr
    assert not (results_copy / "evaluation.json").exists()


@pytest.mark.parametrize("content", ["state_dict", "list", "garbage"])
def test_a_torch_file_that_is_not_a_checkpoint_names_itself_and_the_command(content, results_copy, synthetic_root,
                                                                            capsys):
    path = results_copy / "checkpoints" / "attempt_2" / "split_0.pt"
    if content == "state_dict":
        torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(b"PK\x03\x04 not a zip at all")
    for argv in (["--category", "demo", "--data-root", str(synthetic_root)],
                 ["--images", str(synthetic_root / "demo" / "test" / "hole")]):
        code, _, stderr = _evaluate(["--attempt", "2", *argv, "--out", str(results_copy)], capsys)
        assert code == 2 and "Traceback" not in stderr, stderr
        assert str(path) in stderr.strip().splitlines()[-1]
        assert f"python train.py --attempt 2 --out {results_copy}" in stderr


def test_images_folder_skips_and_lists_bad_files_and_goes_on(trained_one, tmp_path, synthetic_root, capsys):
    folder = tmp_path / "incoming"
    folder.mkdir()
    Image.open(synthetic_root / "demo/test/hole/000.png").save(folder / "a_good.png")
    grey = np.asarray(Image.open(synthetic_root / "demo/test/stain/000.png").convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(folder / "b_grey16.png")
    write_png_claiming(folder / "c_bomb.png", 30000, 30000)
    (folder / "d_garbage.png").write_bytes(b"not an image")
    (folder / "e_empty.jpg").write_bytes(b"")
    csv_path = tmp_path / "out.csv"
    code, stdout, stderr = _evaluate(["--attempt", "2", "--images", str(folder), "--csv", str(csv_path),
                                      "--out", str(trained_one)], capsys)
    assert code == 0, stderr
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [str(folder / "a_good.png"),
                                                                   str(folder / "b_grey16.png")]
    assert "c_bomb.png: image has 900,000,000 pixels, above the limit" in stderr
    assert "d_garbage.png: cannot decode image" in stderr and "e_empty.jpg: zero-byte" in stderr
    assert len(csv_path.read_text().splitlines()) == 3


def test_images_folder_with_nothing_usable_exits_2(trained_one, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    write_png_claiming(folder / "bomb.png", 30000, 30000)
    (folder / "junk.png").write_bytes(b"junk")
    code, _, stderr = _evaluate(["--attempt", "2", "--images", str(folder), "--out", str(trained_one)], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "none of the 2 images in --images" in stderr and "bomb.png" in stderr
    code, _, stderr = _evaluate(["--attempt", "2", "--images", str(folder / "junk.png"), "--out", str(trained_one)],
                                capsys)
    assert code == 2 and "is a file, not a folder" in stderr


@pytest.mark.parametrize("where, says", [("missing/p.csv", "the folder {tmp}/missing does not exist"),
                                         ("a_folder", "--csv {tmp}/a_folder is a folder"),
                                         ("a_file/p.csv", "the folder {tmp}/a_file is a file, not a folder")])
def test_csv_that_cannot_be_written_is_one_line_before_any_work(where, says, trained_one, synthetic_root, tmp_path,
                                                                capsys):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("")
    code, stdout, stderr = _evaluate(["--attempt", "2", "--images", str(synthetic_root / "demo/test/hole"),
                                      "--csv", str(tmp_path / where), "--out", str(trained_one)], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert says.format(tmp=tmp_path) in stderr


def test_a_negative_split_is_refused_naming_the_flag(trained_one, synthetic_root, capsys):
    code, _, stderr = _evaluate(["--attempt", "2", "--images", str(synthetic_root / "demo/test/hole"),
                                 "--split", "-1", "--out", str(trained_one)], capsys)
    assert code == 2 and "argument --split: must be >= 0, got -1" in stderr


def test_figures_path_taken_by_a_file_is_one_line(results_copy, synthetic_root, capsys):
    assert not (results_copy / "figures").exists()
    (results_copy / "figures").write_text("a file where the figures folder goes")
    code, _, stderr = _evaluate(["--attempt", "2", "--category", "demo", "--data-root", str(synthetic_root),
                                 "--out", str(results_copy)], capsys)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith(f"cannot write {results_copy / 'figures'}/"
                                                    "classification_confusion_matrix.png: a parent of it is a file, "
                                                    "not a folder")
    assert not (results_copy / "evaluation.json").exists()


def test_read_result_checks_the_category(tmp_path):
    path = write_json(tmp_path / "stats_bottle.json", {"category": "hazelnut", "counts": {}})
    with pytest.raises(UserError, match=r"stats_bottle\.json .*it is for category 'hazelnut', not 'bottle'; "
                                        r"make it again with: python stats\.py"):
        read_result(path, {"counts": dict}, "python stats.py --category bottle", category="bottle")
    assert read_result(path, {"counts": dict}, "x", category="hazelnut")["category"] == "hazelnut"


@pytest.mark.parametrize("name", ["stats_bottle.json", "anomaly_bottle.json", "attempt_3.json"])
def test_report_names_results_from_another_category(name, tmp_path):
    from report_results import make_results

    folder = make_results(tmp_path, seed=3)
    data = json.loads((folder / name).read_text())
    write_json(folder / name, {**data, "category": "hazelnut"})
    with pytest.raises(UserError, match=rf"{name} holds results for category 'hazelnut', not 'bottle'"):
        report.collect_inputs(folder, "bottle")


def test_report_results_that_is_a_file_says_so(tmp_path):
    (tmp_path / "results").write_text("")
    with pytest.raises(UserError, match=r"--results .*results is a file, not a folder"):
        report.collect_inputs(tmp_path / "results")


# -- issue 21: an error after a progress bar, outputs over inputs, formula-like names, flags that do nothing ---------

def test_a_missing_checkpoint_error_starts_its_own_line(results_copy, synthetic_root, capsys):
    (results_copy / "checkpoints" / "attempt_2" / "split_0.pt").unlink()
    code, _, stderr = _evaluate(["--category", "demo", "--data-root", str(synthetic_root), "--out",
                                 str(results_copy)], capsys)
    assert code == 2 and "checkpoints" in stderr  # the bar was drawn
    errors = [line for line in stderr.split("\n") if "error:" in line]  # lines as a log file has them
    assert len(errors) == 1 and errors[0].split(": error: ")[1].startswith("no checkpoint")
    assert " " not in errors[0].split(": error: ")[0]  # nothing before the program's name on its line


def test_csv_cells_from_a_formula_like_folder_are_text_and_no_input_is_replaced(trained_one, synthetic_root, tmp_path,
                                                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "=1+2"  # given as a relative path, every file cell starts with it
    folder.mkdir()
    for i, name in enumerate(["@a.png", "b\tc.png", "d.png"]):
        Image.open(synthetic_root / f"demo/test/hole/00{i}.png").save(folder / name)
    code, stdout, stderr = _evaluate(["--attempt", "2", "--images", "=1+2", "--csv", "p.csv",
                                      "--out", str(trained_one)], capsys)
    assert code == 0, stderr
    with open("p.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    assert sorted(row[0] for row in rows) == ["'=1+2/@a.png", "'=1+2/b\tc.png", "'=1+2/d.png"]
    assert all(not cell.startswith(CSV_FORMULA_START) for row in rows for cell in row)
    assert len(stdout.splitlines()) == 3 and all(line.count("\t") == 2 for line in stdout.splitlines())
    before = (folder / "d.png").read_bytes()
    code, _, stderr = _evaluate(["--attempt", "2", "--images", "=1+2", "--csv", "=1+2/d.png",
                                 "--out", str(trained_one)], capsys)
    assert code == 2 and "--csv =1+2/d.png would replace an image in --images" in stderr
    checkpoint = trained_one / "checkpoints" / "attempt_2" / "split_0.pt"
    code, _, stderr = _evaluate(["--attempt", "2", "--images", "=1+2", "--csv", str(checkpoint),
                                 "--out", str(trained_one)], capsys)
    assert code == 2 and "would replace a checkpoint file" in stderr
    assert (folder / "d.png").read_bytes() == before and torch.load(checkpoint, weights_only=True)


@pytest.mark.parametrize("argv, says", [
    (["--images", "x", "--category", "demo"], "--category does nothing with --images"),
    (["--csv", "p.csv"], "--csv does nothing without --images"),
    (["--split", "1"], "--split does nothing without --images"),
])
def test_evaluate_refuses_flags_its_mode_ignores(argv, says, trained_one, capsys):
    code, _, stderr = _evaluate([*argv, "--out", str(trained_one)], capsys)
    assert code == 2 and says in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, says", [
    (lambda c: c.update(class_names=[*c["class_names"], "extra"]), "(4, 256), not torch.float32 (5, 256)"),
    (lambda c: c["model"].update({k: v.half() for k, v in list(c["model"].items())[:1]}), "is torch.float16"),
    (lambda c: c["model"].update({k: torch.full_like(v, float("nan")) for k, v in list(c["model"].items())[:1]}),
     "holds NaN"),
    (lambda c: c["config"].update(head="nonsense"), "do not describe a classifier"),
])
def test_a_checkpoint_whose_parts_disagree_names_itself(damage, says, results_copy, synthetic_root, capsys):
    """Weights that do not fit the checkpoint's own class names or config used to end in a RuntimeError."""
    path = results_copy / "checkpoints" / "attempt_2" / "split_0.pt"
    checkpoint = torch.load(path, weights_only=True)
    damage(checkpoint)
    torch.save(checkpoint, path)
    code, _, stderr = _evaluate(["--attempt", "2", "--images", str(synthetic_root / "demo" / "test" / "hole"),
                                 "--out", str(results_copy)], capsys)
    assert code == 2 and "Traceback" not in stderr
    assert f"checkpoint {path} is damaged" in stderr and says in stderr
