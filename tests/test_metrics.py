"""Classification metric helpers against scikit-learn on fixed predictions, and their summaries over splits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from inspectkit.metrics import classification_metrics, mean_std, paired_differences, summarize_splits

CLASSES = ["good", "hole", "scratch", "stain"]
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
Y_PRED = [0, 0, 0, 1, 0, 2, 1, 0, 2, 2, 3, 3]


def test_metrics_equal_scikit_learn():
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert m["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(Y_TRUE, Y_PRED)
    for i, name in enumerate(CLASSES):
        assert m["per_class"][name] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]})
    assert m["confusion_matrix"] == confusion_matrix(Y_TRUE, Y_PRED).tolist()
    assert m["accuracy"] == pytest.approx(8 / 12)  # a hand count, so a broken wrapper cannot agree by accident


def test_a_class_missing_from_a_split_still_gets_a_row():
    m = classification_metrics([0, 0, 1], [0, 1, 1], CLASSES)
    assert np.asarray(m["confusion_matrix"]).shape == (4, 4)
    assert m["per_class"]["stain"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx(f1_score([0, 0, 1], [0, 1, 1], labels=[0, 1, 2, 3], average="macro",
                                                   zero_division=0))


def test_summary_over_splits_is_mean_and_sample_std():
    splits = [classification_metrics(Y_TRUE, Y_PRED, CLASSES), classification_metrics(Y_TRUE, Y_TRUE, CLASSES),
              classification_metrics(Y_TRUE, [0] * 12, CLASSES)]
    summary = summarize_splits(splits, CLASSES)
    f1s = [s["macro_f1"] for s in splits]
    assert summary["macro_f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert summary["macro_f1"]["std"] == pytest.approx(np.std(f1s, ddof=1))
    recalls = [s["per_class"]["hole"]["recall"] for s in splits]
    assert summary["per_class_recall"]["hole"]["mean"] == pytest.approx(np.mean(recalls))
    assert summary["confusion_matrix_sum"][0][0] == 4 + 6 + 6
    assert mean_std([0.5])["std"] == 0.0


def test_paired_differences_count_wins():
    diff = paired_differences([0.5, 0.6, 0.7], [0.6, 0.6, 0.9])
    assert diff["values"] == pytest.approx([0.1, 0.0, 0.2])
    assert diff["mean"] == pytest.approx(0.1)
    assert diff["b_better_splits"] == 2 and diff["ties"] == 1
