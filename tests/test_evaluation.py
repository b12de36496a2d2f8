"""inspectkit/evaluation.py: the reproduction check, re-scoring every checkpoint with each trunk output computed
once across splits and attempts (and never shared between different trunks), and evaluate.py's record and one-line
errors."""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import sys
from collections import Counter

import pytest
import torch
from helpers import run_script

import evaluate
import inspectkit.inference
import train
from inspectkit.cache import DecodeCache
from inspectkit.checkpoints import load_checkpoint
from inspectkit.cli import run
from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.evaluation import reproduction_check, rescore_attempts, trained_results
from inspectkit.inference import inference_model, split_probabilities, trunk_fingerprint, trunk_outputs
from inspectkit.synthetic import make_category
from inspectkit.tensors import load_images

CPU = torch.device("cpu")
SPLITS = 3


@pytest.fixture(scope="module")
def trained_12(synthetic_root, tmp_path_factory):
    """Attempts 1 (frozen backbone, 1 view) and 2 (last level fine-tuned, 8 test-time views) trained once at 32 px,
    1 epoch, 3 splits."""
    out = tmp_path_factory.mktemp("trained_12") / "results"
    argv = ["--attempt", "1,2", "--category", "demo", "--data-root", str(synthetic_root), "--image-size", "32",
            "--epochs", "1", "--splits", str(SPLITS), "--arch", "mobilenet_v2", "--weights", "none",
            "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSPECTKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run(train.main, train.get_args_parser(), argv)
    return out


def test_trained_results_without_attempts_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match=r"no trained attempts .* run first: python train.py --attempt 3"):
        trained_results(tmp_path, "3")


def _count_trunk_inputs(monkeypatch) -> Counter:
    """Each image each trunk sees, by (trunk, image bytes): ``inference.trunk_runner``'s runners wrapped, not
    replaced."""
    seen: Counter = Counter()
    real = inspectkit.inference.trunk_runner

    runners = []

    def counting_runner(*args, **kwargs):
        run = real(*args, **kwargs)
        number = len(runners)  # not id(run): a freed runner's id can come back
        runners.append(number)

        def counting(images_uint8):
            for image in images_uint8:
                seen[number, hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest()] += 1
            return run(images_uint8)

        return counting

    monkeypatch.setattr(inspectkit.inference, "trunk_runner", counting_runner)
    return seen


def _checkpoints(out, attempt):
    return [load_checkpoint(out / "checkpoints" / f"attempt_{attempt}" / f"split_{k}.pt") for k in range(SPLITS)]


def test_each_trunk_output_is_computed_once_across_splits(trained_12, synthetic_root, monkeypatch):
    category = load_category(synthetic_root, "demo", progress=False)
    results = trained_results(trained_12, "all")
    frozen, fine_tuned = _checkpoints(trained_12, 1), _checkpoints(trained_12, 2)
    assert len({trunk_fingerprint(c) for c in fine_tuned}) == 1  # the trunk is frozen: the same in every split
    assert trunk_fingerprint(frozen[0]) != trunk_fingerprint(fine_tuned[0])  # attempt 1 cuts deeper
    per_split = [c["split"]["test"] for c in fine_tuned]
    union = set().union(*per_split)
    assert len(union) < sum(map(len, per_split))  # the splits share test images, so there is something to reuse
    seen = _count_trunk_inputs(monkeypatch)
    rescored = rescore_attempts(results, category, trained_12, CPU, progress=False)
    assert rescored.timing["trunk_groups"] == 2
    assert sum(seen.values()) == len(union) * (1 + 8) == rescored.timing["trunk_images"]
    assert set(seen.values()) == {1}  # each (trunk, image, view) once
    for result in results:
        check = reproduction_check(result, rescored.splits[result["attempt"]])
        assert check["equal"], check


def test_different_trunks_are_not_shared(trained_12, synthetic_root, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "results"
    shutil.copytree(trained_12, out)
    path = out / "checkpoints" / "attempt_2" / "split_0.pt"
    checkpoint = torch.load(path, weights_only=True)
    key = next(k for k in checkpoint["model"] if k.startswith("trunk.") and k.endswith("weight"))
    checkpoint["model"][key] = torch.randn_like(checkpoint["model"][key])
    torch.save(checkpoint, path)
    category = load_category(synthetic_root, "demo", progress=False)
    results = trained_results(out, "2")
    seen = _count_trunk_inputs(monkeypatch)
    rescored = rescore_attempts(results, category, out, CPU, progress=False)
    assert rescored.timing["trunk_groups"] == 2
    others = set().union(*(c["split"]["test"] for c in _checkpoints(out, 2)[1:]))
    assert sum(seen.values()) == 8 * (len(others) + len(checkpoint["split"]["test"]))
    images = _test_images(category, checkpoint)
    own = trunk_outputs(inference_model(checkpoint, CPU), images, 8, CPU, progress=False)
    borrowed = trunk_outputs(inference_model(_checkpoints(trained_12, 2)[0], CPU), images, 8, CPU, progress=False)
    # sharing them would have scored the wrong features (a random-init trunk's outputs are tiny: compare relatively)
    assert (own - borrowed).abs().max() > 0.1 * borrowed.abs().max()
    assert rescored.splits[2][0]["prob"] == pytest.approx(
        split_probabilities(checkpoint, own, CPU).max(1).values.tolist(), abs=1e-6)


def _test_images(category, checkpoint):
    return load_images(category, checkpoint["split"]["test"], checkpoint["config"]["image_size"], DecodeCache(),
                       progress=False)


def test_reproduction_check_flags_a_changed_metric(trained_12, synthetic_root):
    category = load_category(synthetic_root, "demo", progress=False)
    result = trained_results(trained_12, "2")[0]
    rescored = rescore_attempts([result], category, trained_12, CPU, progress=False).splits[2]
    assert reproduction_check(result, rescored)["equal"]
    changed = copy.deepcopy(result)
    changed["test"]["accuracy"]["values"][1] += 0.05
    check = reproduction_check(changed, rescored)
    assert not check["equal"]
    assert check["max_abs_difference"]["accuracy"] == pytest.approx(0.05)
    assert check["max_abs_difference"]["macro_f1"] == 0.0


def test_evaluate_writes_the_record_with_its_wall_time_and_the_command_it_was_given(trained_12, synthetic_root,
                                                                                     capsys, monkeypatch):
    argv = ["--category", "demo", "--data-root", str(synthetic_root), "--out", str(trained_12)]
    parser = evaluate.get_args_parser()
    parser.set_defaults(command=["evaluate.py", *argv])  # as run_all.py gives each step its own command
    monkeypatch.setattr(sys, "argv", ["elsewhere.py"])  # provenance must not read the process's argv
    run(evaluate.main, parser, argv)
    stdout = capsys.readouterr().out
    record = json.loads((trained_12 / "evaluation.json").read_text())
    assert record["provenance"]["command"] == shlex.join(["evaluate.py", *argv])
    assert all(r["equal"] for r in record["reproduction"]), record["reproduction"]
    assert record["timing"]["wall_s"] >= record["timing"]["rescore_s"] > 0
    assert record["best"]["rule"] == "highest mean test macro-F1 over splits (ties: lower std)"
    assert "provenance" in record and "reproduced from checkpoints: True" in stdout


def test_evaluate_without_attempts_exits_2_in_one_line(synthetic_root, tmp_path, capsys):
    code, _, stderr = run_script(evaluate, ["--category", "demo", "--data-root", str(synthetic_root),
                                            "--out", str(tmp_path / "empty")], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "no trained attempts" in stderr and "python train.py --attempt all" in stderr


def test_evaluate_on_another_category_exits_2_in_one_line(trained_12, tmp_path, capsys):
    root = tmp_path / "data"
    make_category(root, "other", image_size=32, n_train=4, n_test_good=3, n_per_defect=3, seed=1)
    before = (trained_12 / "evaluation.json").read_bytes() if (trained_12 / "evaluation.json").exists() else None
    code, _, stderr = run_script(evaluate, ["--category", "other", "--data-root", str(root),
                                            "--out", str(trained_12)], capsys)
    assert code == 2 and "Traceback" not in stderr  # above it, only the data check's progress bar
    assert stderr.strip().splitlines()[-1].endswith("were trained on 'demo', not 'other'; pass --category demo")
    assert stderr.count("error:") == 1
    after = (trained_12 / "evaluation.json").read_bytes() if (trained_12 / "evaluation.json").exists() else None
    assert after == before
