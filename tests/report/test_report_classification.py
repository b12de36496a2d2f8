"""Q2 and Q3 from the attempt records: what each attempt modifies in words, what it reuses, and why the best one
wins, read from the confusion matrices."""

from __future__ import annotations

import numpy as np
from report_results import _attempt, _provenance

from inspectkit.attempts import ATTEMPTS
from inspectkit.report.classification import attempt_context, describe, errors, reuses, verdict, why_best


def _rows(timing=None):
    """The four attempts of one train.py run (the factory's attempt 3 trains nothing), with ``timing`` changes."""
    rng = np.random.default_rng(0)
    rows = []
    for n in (1, 2, 3, 4):
        data = {**_attempt(n, rng, 0.6 + 0.05 * n), "provenance": _provenance(False)}
        data["timing"].update((timing or {}).get(n, {}))
        rows.append(attempt_context(n, data))
    return rows


def test_what_each_attempt_modifies_is_read_from_its_config():
    a1, a2, a3, a4 = (ATTEMPTS[n].to_dict() for n in (1, 2, 3, 4))
    a2["layout"] = {"stages": 19, "trainable_stages": 5}
    assert describe(a1, None) == ["backbone frozen", "new linear head", "no augmentation", "plain cross-entropy loss"]
    two = describe(a2, a1)
    assert two[0] == "last 5 of the backbone's 19 blocks fine-tuned"
    assert "new two-layer head (256 hidden units, dropout 0.3)" in two
    assert "augmented with the 8 flips and 90-degree rotations and light colour jitter" in two
    assert "test predictions averaged over 8 flipped and rotated views" in two
    assert not any("loss" in part for part in two)  # the loss did not change
    three = describe(a3, a2)
    assert len(three) == 2 and "decides good or defect" in three[0] and "logistic regression" in three[1]
    assert describe(a4, a3) == ["logit-adjusted loss (τ = 1)"]
    assert not any("resolution level" in p or "features." in p for p in describe(a2, a1) + three)


def test_reuse_is_claimed_only_within_one_run_and_when_nothing_was_trained_again():
    rows = _rows()
    assert reuses(rows) == {1: [], 2: [], 3: [{"what": "trained classifiers", "from": 2}],
                            4: [{"what": "anomaly detectors", "from": 3}]}
    trained = _rows({3: {"train_s": 120.0}})  # attempt 3 trained its own classifiers
    assert reuses(trained)[3] == []
    separate = _rows()
    separate[3]["provenance"] = {**separate[3]["provenance"], "command": "train.py --attempt 4"}
    assert reuses(separate)[4] == []  # another run: nothing was shared


def _confusion(matrix):
    return {"class_names": ["good", "crack", "hole"], "confusion": matrix}


def test_why_the_best_wins_comes_from_the_confusion_matrices():
    before = _confusion([[20, 0, 0], [3, 5, 2], [0, 1, 9]])  # 3 cracks called good, 3 type confusions
    best = _confusion([[19, 1, 0], [0, 9, 1], [0, 0, 10]])  # none called good, 1 false alarm, 1 confusion
    assert errors(before) == {"missed": 3, "missed_by_class": {"crack": 3}, "false_alarms": 0, "type_confusions": 3}
    why = why_best(best, before)
    assert [w["kind"] for w in why] == ["missed", "type_confusions", "false_alarms"]  # largest relative drop first
    assert why[0]["before"] == 3 and why[0]["after"] == 0 and why[0]["missed_by_class"] == {"crack": 3}
    assert why[2] == {"kind": "false_alarms", "before": 0, "after": 1, "missed_by_class": {"crack": 3}}
    assert why_best(best, best) == []


def test_verdict_weighs_the_mean_against_the_spread():
    assert verdict({"mean": 0.07, "std": 0.06}) == "improved"
    assert verdict({"mean": 0.08, "std": 0.11}) == "did not clearly change"
    assert verdict({"mean": -0.05, "std": 0.01}) == "worsened"
