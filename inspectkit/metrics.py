"""Classification metrics as thin wrappers over scikit-learn, and their mean and spread over splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

SUMMARY_METRICS = ("macro_f1", "accuracy", "balanced_accuracy")


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Labels are indices into ``class_names``; a class absent from both ``y_true`` and ``y_pred`` scores 0.
    """
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": len(y_true),
    }


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "values"}``; std is the sample standard deviation (ddof=1), 0 for one value."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": array.tolist()}


def summarize_splits(per_split: Sequence[dict], class_names: Sequence[str]) -> dict:
    """Mean and std over splits of the summary metrics, and of each class's recall, precision and F1."""
    summary = {name: mean_std([m[name] for m in per_split]) for name in SUMMARY_METRICS}
    for measure in ("recall", "precision", "f1"):
        summary[f"per_class_{measure}"] = {
            c: mean_std([m["per_class"][c][measure] for m in per_split]) for c in class_names}
    summary["confusion_matrix_sum"] = np.sum([m["confusion_matrix"] for m in per_split], axis=0).tolist()
    return summary


def paired_differences(per_split_a: Sequence[float], per_split_b: Sequence[float]) -> dict:
    """``b - a`` per split (the splits are shared, so the pairs are matched): mean, std, values, and wins of b."""
    diff = np.asarray(per_split_b, dtype=float) - np.asarray(per_split_a, dtype=float)
    return {**mean_std(diff), "b_better_splits": int((diff > 0).sum()), "ties": int((diff == 0).sum()),
            "splits": len(diff)}
