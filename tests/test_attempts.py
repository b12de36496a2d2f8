"""The four attempts as data: each tells the story the issue asks for, and bad choices are user errors; the
best-attempt rule, the comparison table and the reuse rules; and the module needs no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from report_results import _attempt as attempt_record

from inspectkit.attempts import ATTEMPTS, best_attempt, classifier_recipe, compare, select_attempts, shares_detector
from inspectkit.errors import UserError


def test_the_four_attempts_build_on_each_other():
    a1, a2, a3, a4 = (ATTEMPTS[n] for n in (1, 2, 3, 4))
    assert a1.train_levels == 0 and not a1.augmentation and a1.loss == "cross_entropy" and a1.image_size == 224
    assert a2.train_levels > 0 and a2.augmentation and a2.optimizer == "adamw" and a2.schedule == "cosine"
    assert a2.early_stopping_patience is not None and a2.head == "mlp" and a2.image_size > a1.image_size
    assert 0 < a2.lr_backbone < a2.lr_head and not a2.anomaly_gate
    for before, after, changed in ((a2, a3, {"anomaly_gate", "region_model"}), (a3, a4, {"loss", "logit_adjust_tau"})):
        differing = {k for k, v in after.to_dict().items() if before.to_dict()[k] != v}
        assert differing == {"number", "name", "what_changed", *changed}  # each step changes one thing
    assert a3.anomaly_gate and a3.region_model and a4.loss == "logit_adjusted" and a4.logit_adjust_tau > 0
    for attempt in (a1, a2, a3, a4):
        record = attempt.to_dict()
        assert record["name"] and record["what_changed"] and isinstance(record["augmentation"], list)


def test_select_attempts():
    assert [a.number for a in select_attempts("all")] == [1, 2, 3, 4]
    assert [a.number for a in select_attempts("3")] == [3]
    assert [a.number for a in select_attempts("4,3")] == [3, 4]
    for bad in ("5", "0", "three", "", "3,5"):
        with pytest.raises(UserError, match="choose one of 1, 2, 3, 4, a comma list"):
            select_attempts(bad)


def _attempt(number, mean, std):
    return {"attempt": number, "test": {"macro_f1": {"mean": mean, "std": std}}}


def test_best_attempt_is_the_highest_mean_and_a_tie_goes_to_the_lower_std():
    attempts = [_attempt(1, 0.70, 0.01), _attempt(2, 0.80, 0.05), _attempt(3, 0.80, 0.02), _attempt(4, 0.79, 0.0)]
    assert best_attempt(attempts)["attempt"] == 3
    assert best_attempt(attempts[:2])["attempt"] == 2  # a higher mean wins even with a larger std
    assert best_attempt(list(reversed(attempts)))["attempt"] == 3  # not the order they come in


def test_best_attempt_reads_the_report_rows_through_a_key():
    rows = [{"number": 1, "macro_f1": {"mean": 0.9, "std": 0.1}}, {"number": 2, "macro_f1": {"mean": 0.9, "std": 0.0}}]
    assert best_attempt(rows, macro_f1=lambda r: r["macro_f1"])["number"] == 2


def test_compare_tables_every_attempt_names_the_rules_best_and_pairs_them_by_split():
    rng = np.random.default_rng(0)
    results = [attempt_record(n, rng, accuracy) for n, accuracy in ((1, 0.5), (2, 0.9), (3, 0.7))]
    comparison = compare(results)
    assert comparison["best_attempt"] == comparison["best"]["attempt"] == best_attempt(results)["attempt"] == 2
    assert comparison["best"]["macro_f1"]["mean"] == results[1]["test"]["macro_f1"]["mean"]
    assert [row["attempt"] for row in comparison["table"]] == [1, 2, 3]
    assert [row["what_changed"] for row in comparison["table"]] == [ATTEMPTS[n].what_changed for n in (1, 2, 3)]
    assert [(d["a"], d["b"]) for d in comparison["differences"]] == [(1, 2), (1, 3), (2, 3)]
    first, second = (r["test"]["macro_f1"]["values"] for r in results[:2])
    paired = comparison["differences"][0]["macro_f1"]
    assert paired["values"] == pytest.approx([b - a for a, b in zip(first, second, strict=True)])
    assert paired["b_better_splits"] == 3


def _json_config(number, **changes):
    """An attempt_N.json config: the attempt's fields plus what train.py adds (backbone, weights, layout)."""
    weights = {"spec": "file", "file": "w.pth", "sha256": "ab" * 32, "pretrained": True}
    return {**ATTEMPTS[number].to_dict(), "arch": "mobilenet_v2", "weights": weights, "epochs": 20,
            "layout": {"stages": 19, "frozen_stages": 14}, **changes}


def test_attempt_3_trains_the_classifier_of_attempt_2_and_attempt_4_does_not():
    assert classifier_recipe(ATTEMPTS[2].to_dict()) == classifier_recipe(ATTEMPTS[3].to_dict())
    assert classifier_recipe(_json_config(2)) == classifier_recipe(_json_config(3))
    assert classifier_recipe(_json_config(3)) != classifier_recipe(_json_config(4))  # another loss
    assert classifier_recipe(_json_config(2)) != classifier_recipe(_json_config(3, epochs=5))
    other_weights = {"spec": "imagenet", "file": None, "sha256": None, "pretrained": True}
    assert classifier_recipe(_json_config(2)) != classifier_recipe(_json_config(3, weights=other_weights))


def test_attempt_4_shares_the_detector_of_attempt_3_only_with_the_same_inputs():
    assert shares_detector(_json_config(3), _json_config(4))
    assert not shares_detector(_json_config(2), _json_config(3))  # attempt 2 has no detector
    assert not shares_detector(_json_config(3), _json_config(4, image_size=224))
    assert not shares_detector(_json_config(3), _json_config(4, arch="resnet18"))


def test_the_rules_need_no_torch():
    code = "import sys, inspectkit.attempts; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
