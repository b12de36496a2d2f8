"""The anomaly gate: the validation-tuned threshold, the gated probabilities, and a detector fitted on synthetic
good images that separates synthetic defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit.cache import DecodeCache
from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.gate import apply_gate, check_gate_arch, fit_gate, tune_threshold
from inspectkit.training import load_images


def test_threshold_sits_halfway_across_a_separable_validation_set():
    scores = np.array([1.0, 1.5, 2.0, 4.0, 5.0])
    result = tune_threshold(scores, np.array([0, 0, 0, 1, 1], dtype=bool))
    assert result["threshold"] == 3.0 and result["val_balanced_accuracy"] == 1.0


def test_threshold_on_overlapping_scores_maximises_balanced_accuracy():
    scores = np.array([1.0, 2.0, 3.0, 2.5, 4.0, 5.0])
    is_defect = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    result = tune_threshold(scores, is_defect)
    flagged = scores >= result["threshold"]
    best = max(((scores[is_defect] >= t).mean() + (scores[~is_defect] < t).mean()) / 2 for t in np.r_[scores, 9])
    assert ((flagged[is_defect]).mean() + (~flagged[~is_defect]).mean()) / 2 == pytest.approx(best)
    with pytest.raises(UserError, match="good and defective"):
        tune_threshold(scores, np.zeros(6, dtype=bool))


def test_gate_overrides_good_vs_defect_and_keeps_the_defect_ranking():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.9, 0.02, 0.08], [0.1, 0.6, 0.3]])
    gated = apply_gate(probs, np.array([5.0, 0.1, 0.2]), threshold=1.0, good_index=0)
    assert gated.argmax(1).tolist() == [1, 0, 0]  # flagged -> best defect class; below -> good
    assert torch.allclose(gated.sum(1), torch.ones(3))
    assert gated[0, 1] / gated[0, 2] == pytest.approx(2.0)


def test_gate_needs_a_detector_backbone():
    check_gate_arch("mobilenet_v2")
    with pytest.raises(UserError, match="anomaly-guided"):
        check_gate_arch("squeezenet1_1")


def test_detector_fitted_on_good_images_flags_synthetic_defects(synthetic_root):
    category = load_category(synthetic_root, "demo", validate=False)
    good = [s for s in category.samples if not s.is_defect]
    defect = [s for s in category.samples if s.is_defect]
    files = [category.relative(s.path) for s in good + defect]
    images = load_images(category, files, 64, DecodeCache(disk=False), progress=False)
    n_fit = len(good) - 6
    detector = fit_gate(images[:n_fit], "mobilenet_v2", "none", seed=0, device=torch.device("cpu"))
    scores, _ = detector.score(images[n_fit:])
    is_defect = np.array([False] * 6 + [True] * len(defect))
    threshold = tune_threshold(scores, is_defect)["threshold"]
    assert ((scores >= threshold) == is_defect).mean() >= 0.8
