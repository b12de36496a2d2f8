"""The anomaly gate: the validation-tuned threshold, the gated probabilities, and a detector fitted on synthetic
good images that separates synthetic defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit.cache import DecodeCache
from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.gate import (
    AREA_LEVELS,
    apply_gate,
    check_gate_arch,
    fit_gate,
    fit_region_model,
    gated_probabilities,
    region_descriptors,
    region_probabilities,
    tune_threshold,
)
from inspectkit.tensors import load_images


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
    assert detector.whitening is None and not detector.scorer.whitened  # as the committed attempts 3 and 4 were made
    scores, _ = detector.score(images[n_fit:])
    is_defect = np.array([False] * 6 + [True] * len(defect))
    threshold = tune_threshold(scores, is_defect)["threshold"]
    assert ((scores >= threshold) == is_defect).mean() >= 0.8


def test_region_descriptors_describe_the_most_anomalous_patches_and_their_area():
    features = torch.zeros(2, 3, 10, 10)
    features[:, 0] = 1.0
    features[:, 1, :2, :2] = 5.0  # channel 1 marks the anomalous corner
    scores = torch.full((2, 10, 10), 1.0)
    scores[0, :1, :1] = 4.0  # image 0: one anomalous patch
    scores[1, :2, :2] = 4.0  # image 1: four
    d = region_descriptors(features, scores, top_share=0.01)  # 1 of 100 patches
    assert d.shape == (2, 2 * 3 + len(AREA_LEVELS) + 1)
    np.testing.assert_allclose(d[:, :3], [[1.0, 5.0, 0.0]] * 2)  # the top patch's feature
    areas = d[:, 6:6 + len(AREA_LEVELS)]
    np.testing.assert_allclose(areas, np.log(np.array([[0.01], [0.04]]) + 1e-4).repeat(len(AREA_LEVELS), 1))
    assert (d[:, -1] == 4.0).all()  # the maximum patch score
    # the score-weighted mean sits near the anomalous patches' feature (5), far from the plain mean (0.2)
    assert (d[:, 4] > 4.0).all() and (d[:, 4] <= 5.0).all()


def test_region_model_probabilities_match_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    labels = ["b", "c", "a"] * 10
    x = rng.normal(size=(30, 5)) + np.array([{"a": 0, "b": 1, "c": 2}[c] for c in labels])[:, None]
    model = fit_region_model(x, labels, seed=0)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.1, max_iter=5000, random_state=0).fit(scaler.transform(x), labels)
    test = rng.normal(size=(7, 5))
    probs = region_probabilities(model, test, ["good", "a", "b", "c"])
    assert (probs[:, 0] == 0).all()  # good: the gate's to decide, never the region model's
    np.testing.assert_allclose(probs[:, 1:].numpy(), reference.predict_proba(scaler.transform(test)), atol=1e-6)
    with pytest.raises(UserError, match="two defect types"):
        fit_region_model(x, ["a"] * 30, seed=0)


def test_gated_probabilities_mix_the_classifier_and_the_region_model():
    names = ["good", "a", "b"]
    classifier = torch.tensor([[0.5, 0.4, 0.1], [0.8, 0.1, 0.1]])
    gate = {"threshold": 1.0, "region_model": {"mean": torch.zeros(1, dtype=torch.float64),
                                               "scale": torch.ones(1, dtype=torch.float64),
                                               "coef": torch.tensor([[3.0]], dtype=torch.float64),
                                               "intercept": torch.zeros(1, dtype=torch.float64),
                                               "classes": ["a", "b"]}}  # scikit-learn's binary form: b's score
    regions = np.array([[1.0], [1.0]])  # the region model says b with p = sigmoid(3)
    out = gated_probabilities(classifier, np.array([2.0, 0.5]), gate, regions, names)
    p_b = float(torch.sigmoid(torch.tensor(3.0)))
    assert out[0, 2] == pytest.approx((0.2 + p_b) / 2) and out[0, 1] == pytest.approx((0.8 + 1 - p_b) / 2)
    assert out[1].tolist() == [1.0, 0.0, 0.0]  # below the threshold: good, whatever the classifier says
    without = gated_probabilities(classifier, np.array([2.0, 0.5]), {"threshold": 1.0}, regions, names)
    assert without[0, 1] == pytest.approx(0.8)  # no region model: the classifier's defect ranking alone
