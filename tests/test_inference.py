"""inspectkit/inference.py: ``predict`` averages the test-time views; the fast engine (batch norms folded, ONNX Runtime
on a CPU, trunk outputs shared) gives the same probabilities; a ``ClassifierCache`` builds each structure once and
gives every checkpoint its own weights; the trunk fingerprint tells trunks apart and ignores the rest."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import inspectkit.inference
from inspectkit.attempts import ATTEMPTS
from inspectkit.checkpoints import classifier_from_checkpoint
from inspectkit.classifier import Classifier, build_classifier
from inspectkit.inference import (
    ClassifierCache,
    head_runner,
    inference_model,
    predict,
    split_probabilities,
    trunk_fingerprint,
    trunk_outputs,
    trunk_runner,
)
from inspectkit.tensors import augment_view

CPU = torch.device("cpu")


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


def test_test_time_augmentation_averages_the_eight_orientations():
    torch.manual_seed(0)
    # a small model whose output depends on orientation: a conv trunk and no global symmetry
    model = Classifier(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(), nn.Linear(4, 3))
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[:, 0, :4, :8] = 255  # a bright bar in one corner
    images[:, 1, 3:12, 2] = 200
    by_hand = sum(predict(model, torch.stack([augment_view(i, v, None) for i in images]), CPU) for v in range(8)) / 8
    assert torch.allclose(predict(model, images, CPU, views=8), by_hand, atol=1e-6)
    assert not torch.allclose(predict(model, images, CPU, views=8), predict(model, images, CPU), atol=1e-4)


def test_fast_probabilities_equal_predict():
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
    """A ``ClassifierCache`` builds each structure once and copies it: the copy must carry the new checkpoint's
    weights, not the first one's."""
    model, _ = build_classifier("mobilenet_v2", "none", 3, train_levels=1, head="linear")
    first = {"model": model.state_dict(), "arch": "mobilenet_v2", "class_names": ["good", "a", "b"],
             "config": ATTEMPTS[1].to_dict() | {"train_levels": 1}}
    second = copy.deepcopy(first)
    second["model"] = {k: v + torch.randn_like(v) if k.startswith("head.") else v for k, v in first["model"].items()}
    classifiers = ClassifierCache()
    features = torch.randn(4, *trunk_outputs(inference_model(first, CPU, classifiers),
                                             torch.zeros(1, 3, 64, 64, dtype=torch.uint8), 1, CPU,
                                             progress=False).shape[2:])
    with torch.no_grad():
        logits = {name: inference_model(c, CPU, classifiers).from_trunk(features)
                  for name, c in (("a", first), ("b", second))}
        expected = classifier_from_checkpoint(second).from_trunk(features)
    assert torch.allclose(logits["b"], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits["a"], logits["b"], atol=1e-3)


def test_the_cache_builds_each_structure_once_and_keeps_a_few(monkeypatch):
    builds = []
    real = inspectkit.inference.classifier_from_checkpoint

    def counting(checkpoint):  # the real build, counted
        builds.append(checkpoint["arch"])
        return real(checkpoint)

    monkeypatch.setattr(inspectkit.inference, "classifier_from_checkpoint", counting)
    checkpoints = []
    for classes in (3, 3, 4):
        model, _ = build_classifier("mobilenet_v2", "none", classes, train_levels=0, head="linear")
        checkpoints.append({"model": model.state_dict(), "arch": "mobilenet_v2", "config": ATTEMPTS[1].to_dict(),
                            "class_names": ["good", *"abc"[:classes - 1]]})
    classifiers = ClassifierCache(max_structures=1)
    for checkpoint in checkpoints[:2]:
        built = classifiers.classifier(checkpoint)
        assert all(torch.equal(built.state_dict()[k], v) for k, v in checkpoint["model"].items())
        assert not built.training
    assert len(builds) == 1  # two checkpoints, one structure
    classifiers.classifier(checkpoints[2])  # another head size: a new structure, which evicts the first
    classifiers.classifier(checkpoints[0])
    assert len(builds) == 3
    inference_model(checkpoints[0], CPU)  # without a cache: built from scratch
    assert len(builds) == 4


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
