"""train.py and evaluate.py end to end on synthetic data: the JSON schema, reproduction from checkpoints,
folder prediction, determinism, and every bad input exiting 2 without writing JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import run_script

import evaluate
import train
from inspectkit.cli import run

REPO = Path(__file__).resolve().parent.parent
FAST = ["--image-size", "64", "--epochs", "1", "--splits", "2", "--arch", "mobilenet_v2", "--weights", "none"]


def _run(script, argv, capsys):
    """Run a script in-process like the shell would; return (exit code, stdout, stderr)."""
    return run_script(script, argv, capsys)


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """All four attempts trained once (64 px, 1 epoch, 2 splits) into a shared results folder."""
    out = tmp_path_factory.mktemp("trained") / "results"
    argv = ["--attempt", "all", "--category", "demo", "--data-root", str(synthetic_root), *FAST, "--out", str(out)]
    parser = train.get_args_parser()
    parser.set_defaults(command=["train.py", *argv])  # as run_all.py gives each step its own command
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSPECTKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setattr(sys, "argv", ["elsewhere.py", "--not", "this"])  # provenance must not read the process's argv
        run(train.main, parser, argv)
    return out


def test_the_gate_learns_from_no_test_image(trained):
    """Attempt 3's detector sees the training part's good images only; its region model the training and
    validation parts' defects; counted against the split manifest."""
    manifest = json.loads((trained / "splits_demo.json").read_text())
    label = {img["file"]: img["label"] for img in manifest["images"]}
    data = json.loads((trained / "attempt_3.json").read_text())
    for split, result in zip(manifest["splits"], data["splits"], strict=True):
        gate = result["gate"]
        assert gate["n_train_good"] == sum(label[f] == "good" for f in split["train"])
        assert gate["n_region_model_defects"] == sum(label[f] != "good" for f in split["train"] + split["val"])
        assert len(gate["test_scores"]) == len(split["test"])


def test_every_attempt_writes_the_full_json(trained):
    manifest = json.loads((trained / "splits_demo.json").read_text())
    assert set(manifest) == {"category", "class_names", "fractions", "adjustments", "images", "splits", "provenance"}
    assert set(manifest["images"][0]) == {"file", "label", "sha256"} and len(manifest["splits"]) == 2
    for n in (1, 2, 3, 4):
        data = json.loads((trained / f"attempt_{n}.json").read_text())
        assert data["attempt"] == n and data["class_names"] == ["good", "hole", "scratch", "stain"]
        config = data["config"]
        for key in ("name", "what_changed", "epochs", "optimizer", "lr_head", "lr_backbone", "batch_size",
                    "image_size", "augmentation", "loss", "schedule", "frozen", "arch", "weights"):
            assert key in config, key
        assert config["epochs"] == 1 and config["image_size"] == 64 and config["arch"] == "mobilenet_v2"
        assert len(data["splits"]) == 2
        for split in data["splits"]:
            assert set(split["curves"]) >= {"train_loss", "val_loss", "val_accuracy", "val_macro_f1"}
            assert len(split["curves"]["train_loss"]) == 1
            test = split["test_metrics"]
            assert set(test) >= {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"}
            assert sum(map(sum, test["confusion_matrix"])) == split["n_test"] == len(split["test_predictions"])
            assert (trained / "checkpoints" / f"attempt_{n}" / f"split_{data['splits'].index(split)}.pt").is_file()
        for metric in ("macro_f1", "accuracy", "balanced_accuracy"):
            values = [s["test_metrics"][metric] for s in data["splits"]]
            assert data["test"][metric]["mean"] == pytest.approx(sum(values) / 2)
            assert data["test"][metric]["std"] >= 0
        assert set(data["test"]["per_class_recall"]) == set(data["class_names"])
        assert {"wall_s", "train_images_per_s", "data_loading_share"} <= set(data["timing"])
        assert 0 <= data["timing"]["data_loading_share"] <= 1
        prov = data["provenance"]
        assert prov["demo_data"] is False and prov["weights"]["spec"] == "none" and prov["seed"] == 0
        assert prov["command"].startswith("train.py --attempt all --category demo --data-root ")
    assert manifest["provenance"]["command"].startswith("train.py --attempt all ")


def test_evaluate_reproduces_train_metrics_from_the_checkpoints(trained, synthetic_root, capsys):
    code, stdout, stderr = _run(evaluate, ["--category", "demo", "--data-root", str(synthetic_root),
                                           "--out", str(trained)], capsys)
    assert code == 0, stderr
    result = json.loads((trained / "evaluation.json").read_text())
    assert all(r["equal"] for r in result["reproduction"]), result["reproduction"]
    for row in result["table"]:
        attempt = json.loads((trained / f"attempt_{row['attempt']}.json").read_text())
        assert row["macro_f1"]["mean"] == attempt["test"]["macro_f1"]["mean"]
    means = {row["attempt"]: row["macro_f1"]["mean"] for row in result["table"]}
    assert result["best_attempt"] == max(means, key=means.get) == result["best"]["attempt"]
    assert len(result["differences"]) == 6 and "provenance" in result
    for figure in result["figures"]:
        assert (trained / figure).stat().st_size > 1000
    assert "best: attempt" in stdout


def test_evaluate_predicts_a_folder(trained, synthetic_root, tmp_path, capsys):
    folder = synthetic_root / "demo" / "test" / "stain"
    csv_path = tmp_path / "predictions.csv"
    code, stdout, stderr = _run(evaluate, ["--attempt", "3", "--images", str(folder), "--csv", str(csv_path),
                                           "--out", str(trained)], capsys)
    assert code == 0, stderr
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "file,class,probability" and len(lines) == 1 + 4
    for line in lines[1:]:
        _, cls, prob = line.split(",")
        assert cls in {"good", "hole", "scratch", "stain"} and 0.25 <= float(prob) <= 1.0
    assert len(stdout.splitlines()) == 4


def test_same_seed_same_numbers(synthetic_root, tmp_path, capsys):
    args = ["--attempt", "2", "--category", "demo", "--data-root", str(synthetic_root), "--image-size", "64",
            "--epochs", "1", "--splits", "1", "--arch", "mobilenet_v2", "--weights", "none"]
    runs = []
    for name in ("a", "b"):
        assert _run(train, [*args, "--out", str(tmp_path / name)], capsys)[0] == 0
        data = json.loads((tmp_path / name / "attempt_2.json").read_text())
        runs.append((data["splits"][0]["curves"], data["splits"][0]["test_predictions"]))
    assert runs[0] == runs[1]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.save(torchvision.models.squeezenet1_1().state_dict(), folder / "squeezenet.pth")
    (folder / "corrupt.pth").write_bytes(b"\x80\x02 this is not a torch file")
    return folder


@pytest.mark.parametrize("extra, message", [
    (["--attempt", "5"], "unknown --attempt '5'"),
    (["--arch", "resnet_nope"], "unknown --arch 'resnet_nope'"),
    (["--weights", "WEIGHTS/squeezenet.pth"], "does not fit --arch mobilenet_v2"),
    (["--weights", "WEIGHTS/corrupt.pth"], "cannot read weights file"),
    (["--weights", "WEIGHTS/missing.pth"], "not found"),
    (["--splits", "0"], "--splits must be 1 to 100 (got 0)"),
    (["--splits", "1000"], "--splits must be 1 to 100 (got 1000)"),
    (["--arch", "regnet_x_400mf"], "--arch regnet_x_400mf is not supported for training"),
    (["--category", "../demo"], "is not a category folder name"),
])
def test_bad_train_input_exits_2_without_json(extra, message, synthetic_root, weight_files, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--category", "demo", "--data-root", str(synthetic_root), "--arch", "mobilenet_v2", "--weights", "none",
            "--epochs", "1", "--image-size", "64", "--out", str(out)]
    argv += [a.replace("WEIGHTS", str(weight_files)) for a in extra]
    code, _, stderr = _run(train, argv, capsys)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert not list(out.rglob("*.json"))  # nothing written, not even the split manifest


def test_evaluate_without_checkpoints_says_what_to_run(synthetic_root, tmp_path, capsys):
    code, _, stderr = _run(evaluate, ["--category", "demo", "--data-root", str(synthetic_root),
                                      "--out", str(tmp_path / "empty")], capsys)
    assert code == 2 and "python train.py --attempt all" in stderr
    assert not (tmp_path / "empty" / "evaluation.json").exists()


def test_evaluate_with_a_missing_checkpoint_says_what_to_run(trained, synthetic_root, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "attempt_2.json").write_text((trained / "attempt_2.json").read_text())
    code, _, stderr = _run(evaluate, ["--category", "demo", "--data-root", str(synthetic_root), "--out", str(out)],
                           capsys)
    assert code == 2 and "python train.py --attempt 2" in stderr and "Traceback" not in stderr
    assert not (out / "evaluation.json").exists()


def test_images_folder_without_images_exits_2(trained, tmp_path, capsys):
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing to see")
    code, _, stderr = _run(evaluate, ["--attempt", "3", "--images", str(empty), "--out", str(trained)], capsys)
    assert code == 2 and "no images" in stderr


def test_train_attempt_3_demo_needs_no_weights_and_no_network(tmp_path, monkeypatch, capsys):
    """``python train.py --attempt 3 --demo`` with no --weights: random-init weights, said once, nothing fetched."""

    def no_network(*args, **kwargs):
        raise OSError("this test has no network")

    monkeypatch.setattr("socket.socket.connect", no_network)
    out = tmp_path / "demo"
    code, stdout, stderr = _run(train, ["--attempt", "3", "--demo", "--epochs", "1", "--splits", "1",
                                        "--image-size", "32", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert stdout.count("--demo without --weights: using --weights none") == 1
    data = json.loads((out / "attempt_3.json").read_text())
    assert data["provenance"]["weights"]["spec"] == "none" and data["provenance"]["demo_data"] is True
    assert data["config"]["weights"]["pretrained"] is False


def test_train_attempt_3_as_written_without_data_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MVTEC_ROOT"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--attempt", "3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "hazelnut" in proc.stderr and "--data-root" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag, value, message", [("--seed", "-1", "argument --seed: must be >= 0, got -1"),
                                                  ("--seed", "x", "argument --seed: must be a whole number"),
                                                  ("--seed", str(2**32), "argument --seed: must be below 2**32")])
def test_a_bad_seed_is_refused_by_the_parser_naming_the_flag(flag, value, message, synthetic_root,
                                                                        tmp_path, capsys):
    out = tmp_path / "results"
    code, _, stderr = _run(train, ["--data-root", str(synthetic_root), flag, value, "--out", str(out)], capsys)
    assert code == 2 and message in stderr and "Traceback" not in stderr and "stratify" not in stderr
    assert not out.exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failing", [["--arch", "regnet_x_400mf"], ["--splits", "7"], ["--weights", "imagenet"]])
def test_a_failing_run_leaves_out_as_it_was(failing, synthetic_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    argv = ["--attempt", "2", "--category", "demo", "--data-root", str(synthetic_root), "--image-size", "32",
            "--epochs", "1", "--splits", "1", "--arch", "mobilenet_v2", "--weights", "none", "--out", str(out)]
    assert _run(train, argv, capsys)[0] == 0
    before = _snapshot(out)

    def no_network(*args, **kwargs):
        raise OSError("this test has no network")

    monkeypatch.setattr("socket.socket.connect", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no cached ImageNet weights either
    code, _, stderr = _run(train, [*argv, "--seed", "3", *failing], capsys)
    assert code == 2 and "Traceback" not in stderr, stderr
    assert _snapshot(out) == before  # splits_demo.json still matches the attempt files


def test_more_splits_than_the_rarest_class_has_images_is_refused(synthetic_root, tmp_path, capsys):
    out = tmp_path / "results"
    code, _, stderr = _run(train, ["--category", "demo", "--data-root", str(synthetic_root), "--arch", "mobilenet_v2",
                                   "--weights", "none", "--splits", "5", "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith("--splits 5 is more than the 4 images of the rarest class "
                                                    "'hole': the splits could not differ in its test images; "
                                                    "use --splits 4 (at most 4)")
    assert not list(out.rglob("*.json"))
