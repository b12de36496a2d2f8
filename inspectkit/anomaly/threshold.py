"""Thresholds from good images only: a seeded validation share of ``train/good``, the image and pixel thresholds
at a target false-alarm rate on it, the normalised score, and the rates a threshold gives on labelled images.

A user with no defect images can still set a threshold: the detector is fitted on most of ``train/good`` and the
held-out rest says how high good images score.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import TypeVar

import numpy as np

Item = TypeVar("Item")

# 10 % of train/good: bottle keeps 188 of 209 images for the bank and 21 for validation, screw 288 and 32. The bank
# loses little (screw image AUROC 0.9725 with all 320, 0.9713 with 288). Other shares are not yet measured:
# bench/anomaly_threshold.py compares shares and seeds.
DEFAULT_VALIDATION_SHARE = 0.1
DEFAULT_FALSE_ALARM = 0.01


def split_validation(items: Sequence[Item], share: float, seed: int) -> tuple[list[Item], list[Item]]:
    """``(fit, validation)``: a seeded random ``share`` of ``items`` held out, at least one image on each side
    (when there are two or more); both keep the input order. ``share`` 0 holds out nothing."""
    n = len(items)
    n_val = 0 if share <= 0 or n < 2 else min(n - 1, max(1, round(share * n)))
    held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return ([x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held])


def false_alarm_threshold(good_scores: np.ndarray, rate: float, normal_tail: bool = True) -> dict:
    """The threshold (score >= threshold is a defect) that flags at most ``rate`` of good images (or pixels).

    Two estimates, the higher one wins: the empirical one (just above the ``k+1``-th highest good score, where
    ``k = floor(rate * n)`` false alarms are allowed), and a normal tail (mean + z(1 - rate) * std). With 21
    validation images and a 1 % rate, the empirical estimate is just above the maximum, and a new good image
    beats the maximum of 21 with probability 1/22; the normal tail keeps the estimate from resting on one image.
    For pixels (millions of values, a skewed distribution) pass ``normal_tail=False``: the empirical one decides.
    """
    scores = np.asarray(good_scores).ravel()
    n = len(scores)
    allowed = min(int(np.floor(rate * n)), n - 1)
    kth = np.partition(scores, n - 1 - allowed)[n - 1 - allowed]
    empirical = float(np.nextafter(np.float32(kth), np.float32(np.inf)))  # scores are float32: one step above
    normal = None
    if normal_tail and n > 1:
        normal = float(scores.mean(dtype=np.float64) + NormalDist().inv_cdf(1 - rate) * scores.std(ddof=1,
                                                                                                   dtype=np.float64))
    threshold = empirical if normal is None else max(empirical, normal)
    return {"threshold": threshold, "empirical": empirical, "normal_tail": normal,
            "decided_by": "empirical" if normal is None or empirical >= normal else "normal_tail", "n": n}


def normalized_scores(scores: np.ndarray, threshold: float, center: float) -> np.ndarray:
    """Scores mapped so that ``center`` (the median validation score: a typical good image) is 0, the threshold
    is 0.5 and as far again above the threshold is 1; clipped to [0, 1]."""
    scale = max(threshold - center, 1e-12 * max(abs(threshold), 1.0))
    return np.clip(0.5 + 0.5 * (np.asarray(scores, dtype=np.float64) - threshold) / scale, 0.0, 1.0)


def rates_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Recall, false-alarm rate, precision and F1 of ``scores >= threshold`` against ``labels`` (1 = defect),
    with the counts. Works on image scores and on flattened pixel maps alike (plain counting, no copies)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    flagged = np.asarray(scores).ravel() >= threshold
    tp = int(np.count_nonzero(flagged & labels))
    fp = int(np.count_nonzero(flagged & ~labels))
    positives = int(np.count_nonzero(labels))
    negatives = labels.size - positives
    fn, tn = positives - tp, negatives - fp
    recall = tp / positives if positives else None
    precision = tp / (tp + fp) if tp + fp else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"threshold": float(threshold), "recall": recall, "false_alarm_rate": fp / negatives if negatives else None,
            "precision": precision, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
