"""Good-only thresholds: the seeded validation share, the false-alarm threshold, the normalised score, and the
rates at a threshold against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from inspectkit.anomaly.threshold import false_alarm_threshold, normalized_scores, rates_at_threshold, split_validation


def test_validation_share_is_seeded_disjoint_and_keeps_order():
    items = list(range(209))
    fit, val = split_validation(items, 0.1, seed=0)
    assert len(val) == 21 and len(fit) == 188
    assert sorted(fit + val) == items and not set(fit) & set(val)
    assert fit == sorted(fit) and val == sorted(val)
    assert split_validation(items, 0.1, seed=0) == (fit, val)
    assert split_validation(items, 0.1, seed=1)[1] != val


@pytest.mark.parametrize(("n", "share", "n_val"), [(2, 0.1, 1), (3, 0.9, 2), (1, 0.5, 0), (10, 0.0, 0)])
def test_validation_share_keeps_an_image_on_each_side(n, share, n_val):
    fit, val = split_validation(list(range(n)), share, seed=0)
    assert len(val) == n_val and len(fit) == n - n_val


def test_threshold_flags_at_most_the_rate_of_many_good_scores():
    scores = np.random.default_rng(0).normal(size=20_000).astype(np.float32)
    result = false_alarm_threshold(scores, 0.01)
    flagged = np.mean(scores >= result["threshold"])
    assert flagged <= 0.01 and flagged > 0.008  # the empirical and the normal estimate agree on a normal sample
    pixel = false_alarm_threshold(scores, 0.01, normal_tail=False)
    assert np.sum(scores >= pixel["threshold"]) == 200 and pixel["decided_by"] == "empirical"


def test_threshold_on_few_images_sits_above_their_maximum():
    scores = np.random.default_rng(1).normal(size=21).astype(np.float32)
    result = false_alarm_threshold(scores, 0.01)
    assert result["threshold"] > scores.max() and result["n"] == 21
    assert result["threshold"] == max(result["empirical"], result["normal_tail"])


def test_normalized_score_is_half_at_the_threshold():
    out = normalized_scores(np.array([1.0, 2.0, 3.0, 10.0, -5.0]), threshold=2.0, center=1.0)
    assert out.tolist() == [0.0, 0.5, 1.0, 1.0, 0.0]


def test_rates_match_scikit_learn():
    rng = np.random.default_rng(2)
    labels = rng.random(500) < 0.3
    scores = rng.normal(size=500) + labels
    t = 0.4
    result = rates_at_threshold(labels, scores, t)
    tn, fp, fn, tp = confusion_matrix(labels, scores >= t).ravel()
    precision, recall, f1, _ = precision_recall_fscore_support(labels, scores >= t, average="binary")
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (tp, fp, fn, tn)
    assert result["precision"] == pytest.approx(precision) and result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(f1) and result["false_alarm_rate"] == pytest.approx(fp / (fp + tn))
