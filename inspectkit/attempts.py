"""The four defect-type classification attempts as data: every hyper-parameter of each, in one place; and the
rules that compare attempts: which one is best, the comparison table evaluate.py writes, and which parts of an
earlier attempt a later one reuses.

``train.py`` copies the chosen ``Attempt`` into ``results/attempt_N.json``; the report reads it from there. This
module needs no torch, so the report can apply the same rules as training and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TypeVar

from .errors import UserError
from .metrics import SUMMARY_METRICS, paired_differences

A = TypeVar("A")
BEST_ATTEMPT_RULE = "highest mean test macro-F1 over splits (ties: lower std)"
# Fields that change how a trained classifier's output is used, not the classifier itself: attempts that differ
# only in these train the same network, so one run trains it once (see ``classifier_recipe``).
OUTPUT_USE_FIELDS = ("number", "name", "what_changed", "anomaly_gate", "region_model")


@dataclass(frozen=True)
class Attempt:
    """One training recipe. ``train_levels`` counts the backbone's last resolution levels that are fine-tuned
    (0 = frozen backbone, a linear probe); everything before them is frozen and its output computed once.
    ``early_stopping_start`` is the first (0-based) epoch that may be kept as the best one.
    ``test_time_views`` > 1 averages test predictions over that many flips/rotations. ``anomaly_gate`` lets a
    good-only anomaly detector, fitted per split, decide good vs defect; the classifier then names the defect."""

    number: int
    name: str
    what_changed: str
    image_size: int = 224
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adam"
    lr_head: float = 1e-3
    lr_backbone: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    train_levels: int = 0
    head: str = "linear"
    head_hidden: int = 0
    head_dropout: float = 0.0
    augmentation: tuple[str, ...] = ()
    augmented_views: int = 1
    loss: str = "cross_entropy"
    logit_adjust_tau: float = 0.0
    balanced_sampling: bool = False
    early_stopping_patience: int | None = None
    early_stopping_start: int = 0
    test_time_views: int = 1
    anomaly_gate: bool = False
    region_model: bool = False

    def to_dict(self) -> dict:
        record = asdict(self)
        record["augmentation"] = list(self.augmentation)
        return record


AUGMENTATION = ("the 8 flips and 90-degree rotations of the square (dihedral group D4)",
                "light colour jitter: brightness 0.1, contrast 0.1, saturation 0.05")

ATTEMPTS: dict[int, Attempt] = {
    1: Attempt(
        number=1, name="Linear probe",
        what_changed="baseline: frozen pretrained backbone, new linear head, plain cross-entropy, 224 px, "
                     "no augmentation",
        image_size=224, epochs=60, batch_size=32, optimizer="adam", lr_head=1e-3, schedule="constant",
        train_levels=0, head="linear"),
    2: Attempt(
        number=2, name="Fine-tuning, 320 px, new head",
        what_changed="fine-tune the backbone's last resolution level at a learning rate 5x below the new head's "
                     "(dropout, 256-unit hidden layer); 320 px; flips, 90-degree rotations and light colour "
                     "jitter; AdamW, cosine schedule; early stopping on validation macro-F1 from epoch 8; test "
                     "predictions averaged over the 8 flips and rotations",
        image_size=320, epochs=20, batch_size=16, optimizer="adamw", lr_head=1e-3, lr_backbone=2e-4,
        weight_decay=1e-4, schedule="cosine", train_levels=1, head="mlp", head_hidden=256, head_dropout=0.3,
        augmentation=AUGMENTATION, augmented_views=8, early_stopping_patience=6, early_stopping_start=8,
        test_time_views=8),
}
ATTEMPTS[3] = replace(
    ATTEMPTS[2], number=3, name="Anomaly-guided",
    what_changed="on top of 2: the good-only anomaly detector (PatchCore, fitted on each split's good training "
                 "images) decides good vs defect at a threshold tuned on the validation part; the defect type is "
                 "the mean of the classifier's and a logistic regression's (fitted on the training and validation "
                 "defects) on the detector's features of the most anomalous region and its size",
    anomaly_gate=True, region_model=True)
ATTEMPTS[4] = replace(
    ATTEMPTS[3], number=4, name="Logit-adjusted loss",
    what_changed="on top of 3: logit-adjusted cross-entropy (Menon et al., ICLR 2021) with tau = 1, "
                 "adding tau * log(class prior) to the logits during training only",
    loss="logit_adjusted", logit_adjust_tau=1.0)


def select_attempts(choice: str) -> list[Attempt]:
    """``"1"``..``"4"``, a comma list such as ``"3,4"``, or ``"all"``; anything else is a UserError."""
    if choice == "all":
        return [ATTEMPTS[n] for n in sorted(ATTEMPTS)]
    parts = choice.split(",")
    if not all(p.strip().isdigit() and int(p) in ATTEMPTS for p in parts):
        raise UserError(f"unknown --attempt '{choice}'; choose one of {', '.join(map(str, sorted(ATTEMPTS)))}, "
                        "a comma list of them, or all")
    return [ATTEMPTS[n] for n in sorted({int(p) for p in parts})]


def _test_macro_f1(result: Mapping) -> Mapping:
    return result["test"]["macro_f1"]


def best_attempt(attempts: Sequence[A], macro_f1: Callable[[A], Mapping] = _test_macro_f1) -> A:
    """The one best-attempt rule (``BEST_ATTEMPT_RULE``): highest mean test macro-F1 over splits, ties broken by
    the lower std. ``macro_f1`` picks an attempt's ``{"mean", "std"}``; by default ``attempt["test"]["macro_f1"]``,
    as in an attempt_N.json."""
    return max(attempts, key=lambda a: (macro_f1(a)["mean"], -macro_f1(a)["std"]))


def compare(results: list[dict]) -> dict:
    """The comparison table of attempt_N.json records, the best attempt by ``best_attempt``, and paired differences
    between attempts (evaluation.json's comparison)."""
    table = [{"attempt": r["attempt"], "name": r["config"]["name"], "what_changed": r["config"]["what_changed"],
              **{m: {k: r["test"][m][k] for k in ("mean", "std")} for m in SUMMARY_METRICS},
              "per_class_recall": {c: {k: v[k] for k in ("mean", "std")}
                                   for c, v in r["test"]["per_class_recall"].items()},
              "wall_s": r["timing"]["wall_s"], "epochs": r["config"]["epochs"],
              "image_size": r["config"]["image_size"]} for r in results]
    best = best_attempt(results)
    differences = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            differences.append({"a": a["attempt"], "b": b["attempt"], **{
                m: paired_differences(a["test"][m]["values"], b["test"][m]["values"]) for m in SUMMARY_METRICS}})
    return {"table": table,
            "best_attempt": best["attempt"],
            "best": {"attempt": best["attempt"], "name": best["config"]["name"],
                     "macro_f1": {k: best["test"]["macro_f1"][k] for k in ("mean", "std")},
                     "rule": BEST_ATTEMPT_RULE},
            "differences": differences,
            "differences_note": "b minus a per split on the same splits; mean and sample std of the differences"}


def classifier_recipe(config: Mapping) -> tuple:
    """Everything of an attempt's config (an ``Attempt.to_dict()`` or the ``config`` of an attempt_N.json) that
    decides its trained classifier. Two attempts with equal recipes train the same network on a split (training is
    deterministic for a seed on a CPU), so a run that trains both trains it once and the later one reuses it."""
    return tuple(sorted((k, _hashable(v)) for k, v in config.items() if k not in OUTPUT_USE_FIELDS))


def _hashable(value):
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def shares_detector(earlier: Mapping, later: Mapping) -> bool:
    """Whether ``later`` (a config) uses the same per-split anomaly detector as ``earlier``: both gate on it, and the
    detector's inputs (backbone, weights, input size) are the same, so a run fits it once and the later one reuses
    it."""
    keys = ("arch", "weights", "image_size")
    return bool(earlier.get("anomaly_gate") and later.get("anomaly_gate")
                and all(earlier.get(k) == later.get(k) for k in keys))
