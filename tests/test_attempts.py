"""The four attempts as data: each tells the story the issue asks for, and bad choices are user errors."""

from __future__ import annotations

import pytest

from inspectkit.attempts import ATTEMPTS, select_attempts
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
