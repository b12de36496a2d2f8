"""inspectkit/evaluation.py: the one best-attempt rule, the reproduction check, fast re-scoring (the same
probabilities as ``training.predict``, each trunk output computed once across splits and attempts) and evaluate.py's
one-line errors."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections import Counter

import pytest
import torch
from helpers import run_script
from torch import nn

import evaluate
import train
from inspectkit.attempts import ATTEMPTS
from inspectkit.classifier import build_classifier
from inspectkit.cli import run
from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.evaluation import (
    best_attempt,
    compare,
    head_runner,
    inference_model,
    reproduction_check,
    rescore_attempts,
    split_probabilities,
    trained_results,
    trunk_fingerprint,
    trunk_outputs,
    trunk_runner,
)
from inspectkit.synthetic import make_category
from inspectkit.training import classifier_from_checkpoint, load_checkpoint, predict

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
        mp.setattr(sys, "argv", ["train.py", *argv])
        run(train.main, train.get_args_parser(), argv)
    return out


def test_compare_names_the_same_best_as_the_rule(trained_12):
    results = trained_results(trained_12, "all")
    comparison = compare(results)
    assert comparison["best_attempt"] == comparison["best"]["attempt"] == best_attempt(results)["attempt"]
    assert [row["attempt"] for row in comparison["table"]] == [1, 2]
    assert [(d["a"], d["b"]) for d in comparison["differences"]] == [(1, 2)]


def test_trained_results_without_attempts_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match=r"no trained attempts .* run first: python train.py --attempt 3"):
        trained_results(tmp_path, "3")


def _model_and_images(attempt, classes=4, n=37):
    """A random-init classifier for ``attempt`` with the batch-norm statistics of its ``n`` random images (so that
    it tells them apart, unlike a plain random init), those images, and its checkpoint dict."""
    torch.manual_seed(1)
    model, _ = build_classifier("mobilenet_v2", "none", classes, train_levels=attempt.train_levels,
                                head=attempt.head, head_hidden=attempt.head_hidden, head_dropout=attempt.head_dropout)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8)
    images[:, 0, :20, :30] = 255  # a bright corner, so that the views differ
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None
                module.train()
        model(images)
    model.eval()
    checkpoint = {"model": model.state_dict(), "config": attempt.to_dict(), "arch": "mobilenet_v2",
                  "class_names": ["good", *"abcdefgh"[:classes - 1]]}
    return model, images, checkpoint


def test_fast_probabilities_equal_training_predict():
    model, images, checkpoint = _model_and_images(ATTEMPTS[2])  # 37 images: more than one batch of 32
    fast_model = inference_model(checkpoint, CPU)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast_model.modules())  # all folded into convolutions
    for views in (1, 8):
        outputs = trunk_outputs(fast_model, images, views, CPU, progress=False)
        assert outputs.shape[:2] == (views, 37)
        fast = split_probabilities(checkpoint, outputs, CPU)
        slow = predict(model, images, CPU, views)
        assert fast.shape == (37, 4)
        assert torch.allclose(fast, slow, atol=1e-5), (fast - slow).abs().max()
        assert torch.equal(fast.argmax(1), slow.argmax(1))
        assert len(set(slow.argmax(1).tolist())) > 1  # not one answer for every image
    assert not torch.allclose(predict(model, images, CPU, 8), predict(model, images, CPU, 1), atol=1e-2)


def test_a_second_checkpoint_of_the_same_structure_gets_its_own_weights():
    """``inference_model`` builds each structure once and copies it: the copy must carry the new checkpoint's
    weights, not the first one's."""
    model, _ = build_classifier("mobilenet_v2", "none", 3, train_levels=1, head="linear")
    first = {"model": model.state_dict(), "arch": "mobilenet_v2", "class_names": ["good", "a", "b"],
             "config": ATTEMPTS[1].to_dict() | {"train_levels": 1}}
    second = copy.deepcopy(first)
    second["model"] = {k: v + torch.randn_like(v) if k.startswith("head.") else v for k, v in first["model"].items()}
    features = torch.randn(4, *trunk_outputs(inference_model(first, CPU), torch.zeros(1, 3, 64, 64,
                                                                                      dtype=torch.uint8),
                                             1, CPU, progress=False).shape[2:])
    with torch.no_grad():
        logits = {name: inference_model(c, CPU).from_trunk(features) for name, c in (("a", first), ("b", second))}
        expected = classifier_from_checkpoint(second).from_trunk(features)
    assert torch.allclose(logits["b"], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits["a"], logits["b"], atol=1e-3)


def test_fingerprint_separates_trunks_and_ignores_the_rest():
    model, _ = build_classifier("mobilenet_v2", "none", 3, train_levels=1, head="linear")
    checkpoint = {"model": model.state_dict(), "arch": "mobilenet_v2"}
    other_head = copy.deepcopy(checkpoint)
    other_head["model"]["head.1.bias"] = other_head["model"]["head.1.bias"] + 1
    assert trunk_fingerprint(other_head) == trunk_fingerprint(checkpoint)
    tail_key = next(k for k in checkpoint["model"] if k.startswith("tail.") and k.endswith("weight"))
    other_tail = copy.deepcopy(checkpoint)
    other_tail["model"][tail_key] = other_tail["model"][tail_key] * 2
    assert trunk_fingerprint(other_tail) == trunk_fingerprint(checkpoint)
    trunk_key = next(k for k in checkpoint["model"] if k.startswith("trunk.") and k.endswith("weight"))
    other_trunk = copy.deepcopy(checkpoint)
    other_trunk["model"][trunk_key] = other_trunk["model"][trunk_key].clone()
    other_trunk["model"][trunk_key].view(-1)[0] += 1e-3
    assert trunk_fingerprint(other_trunk) != trunk_fingerprint(checkpoint)
    deeper_cut, _ = build_classifier("mobilenet_v2", "none", 3, train_levels=0, head="linear")
    assert trunk_fingerprint({"model": deeper_cut.state_dict(), "arch": "mobilenet_v2"}) != trunk_fingerprint(
        checkpoint)


def _count_trunk_inputs(monkeypatch) -> Counter:
    """Each image each trunk sees, by (trunk, image bytes): ``evaluation.trunk_runner``'s runners wrapped, not
    replaced."""
    import inspectkit.evaluation

    seen: Counter = Counter()
    real = inspectkit.evaluation.trunk_runner

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

    monkeypatch.setattr(inspectkit.evaluation, "trunk_runner", counting_runner)
    return seen


def test_the_onnx_trunk_and_head_compute_what_pytorch_does():
    pytest.importorskip("onnxruntime")
    model, images, checkpoint = _model_and_images(ATTEMPTS[2], n=5)
    fast_model = inference_model(checkpoint, CPU)
    run_trunk = trunk_runner(fast_model, CPU, (3, 64, 64))
    assert run_trunk != fast_model.trunk_features  # onnxruntime, not the fallback
    features = model.trunk_features(images)
    assert features.abs().max() > 0.1  # numbers of a useful size, not a collapsed random init
    assert torch.allclose(run_trunk(images), features, atol=1e-4)
    run_head = head_runner(fast_model, CPU, tuple(features.shape[1:]))
    assert run_head != fast_model.from_trunk
    with torch.no_grad():
        logits = model.from_trunk(features)
    assert not model.training and logits.std(0).max() > 1e-3  # images told apart, dropout off
    assert torch.allclose(run_head(features), logits, atol=1e-4)


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
    from inspectkit.cache import DecodeCache
    from inspectkit.training import load_images

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


def test_evaluate_writes_the_record_with_its_wall_time(trained_12, synthetic_root, capsys):
    code, stdout, stderr = run_script(evaluate, ["--category", "demo", "--data-root", str(synthetic_root),
                                                 "--out", str(trained_12)], capsys)
    assert code == 0, stderr
    record = json.loads((trained_12 / "evaluation.json").read_text())
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
