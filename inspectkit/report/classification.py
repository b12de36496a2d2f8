"""Q2 and Q3 of the report, computed from attempt_N.json and evaluation.json: the model and what each attempt
modifies (worded from the configs), each step's measured effect, the best attempt and why it wins (from the summed
confusion matrices), what each attempt reuses from an earlier one, and attempt 4 against 3 per defect class.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from ..attempts import best_attempt, classifier_recipe, shares_detector
from ..errors import UserError
from ..metrics import paired_differences

GOOD = "good"
ARCH_NAMES = {"mobilenet_v2": "MobileNetV2", "mobilenet_v3_large": "MobileNetV3-Large", "resnet18": "ResNet-18",
              "resnet50": "ResNet-50", "wide_resnet50_2": "Wide ResNet-50-2", "efficientnet_b0": "EfficientNet-B0",
              "squeezenet1_1": "SqueezeNet 1.1", "convnext_tiny": "ConvNeXt-T"}


def model_name(arch: str) -> str:
    """A TorchVision architecture as its paper names it (the identifier when unknown)."""
    return ARCH_NAMES.get(arch, arch)


def verdict(diff: Mapping[str, float]) -> str:
    """'improved', 'worsened' or 'did not clearly change', from a paired difference's mean and its spread."""
    if diff["mean"] > 0 and diff["mean"] > diff["std"]:
        return "improved"
    if diff["mean"] < 0 and -diff["mean"] > diff["std"]:
        return "worsened"
    return "did not clearly change"


def _lr(config: Mapping) -> str:
    backbone = f"{config['lr_backbone']:.0e}" if config.get("train_levels") else "frozen"
    return f"{config['lr_head']:.0e} / {backbone}"


# Hyper-parameters shown as table columns (label -> how to read them from a config), in table order.
HYPER_COLUMNS = {"epochs": lambda c: str(c["epochs"]), "lr head / backbone": _lr,
                 "optimiser": lambda c: {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}.get(c["optimizer"],
                                                                                           c["optimizer"]),
                 "batch": lambda c: str(c["batch_size"]), "px": lambda c: str(c["image_size"])}


def _augmentation(items: list[str]) -> str:
    """'the 8 flips and 90-degree rotations of the square (D4)' -> 'the 8 flips and 90-degree rotations'."""
    short = [re.sub(r"\s*\(.*?\)", "", item.split(":")[0]).removesuffix(" of the square") for item in items]
    return " and ".join(short)


def describe(config: Mapping, before: Mapping | None) -> list[str]:
    """What an attempt modifies, in words, from its config against the one it builds on (``before``; None for the
    baseline, which is described as it is). Table columns (size, epochs, optimiser, batch, rates) are not repeated."""
    layout = config.get("layout") or {}

    def changed(*keys: str) -> bool:
        return before is None or any(before.get(k) != config.get(k) for k in keys)

    parts = []
    if changed("train_levels"):
        if not config.get("train_levels"):
            parts.append("backbone frozen")
        elif layout.get("trainable_stages"):
            parts.append(f"last {layout['trainable_stages']} of the backbone's {layout['stages']} blocks fine-tuned")
        else:
            parts.append("the backbone's deepest blocks fine-tuned")
    if changed("head", "head_hidden", "head_dropout"):
        hidden, dropout = config.get("head_hidden"), config.get("head_dropout")
        parts.append("new linear head" if config.get("head") == "linear" else
                     f"new two-layer head ({hidden} hidden units, dropout {dropout})")
    if changed("augmentation"):
        parts.append(f"augmented with {_augmentation(config['augmentation'])}" if config.get("augmentation")
                     else "no augmentation")
    if before is not None and changed("schedule"):
        parts.append(f"{config['schedule']} learning-rate schedule")
    if before is not None and changed("weight_decay") and config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']:g}")
    if changed("early_stopping_patience") and config.get("early_stopping_patience"):
        parts.append("early stopping on validation macro-F1")
    if changed("test_time_views") and config.get("test_time_views", 1) > 1:
        parts.append(f"test predictions averaged over {config['test_time_views']} flipped and rotated views")
    if changed("anomaly_gate") and config.get("anomaly_gate"):
        parts.append("a detector trained on good images only decides good or defect; the classifier only names "
                     "the defect type")
    if changed("region_model") and config.get("region_model"):
        parts.append("the type is averaged with a logistic regression on the detector's view of the most "
                     "anomalous region")
    if changed("loss", "logit_adjust_tau"):
        parts.append(f"logit-adjusted loss (τ = {config['logit_adjust_tau']:g})" if config.get("logit_adjust_tau")
                     else "plain cross-entropy loss")
    if changed("balanced_sampling") and config.get("balanced_sampling"):
        parts.append("class-balanced sampling")
    return parts


def attempt_context(number: int, data: Mapping) -> dict:
    """One row of the Q2 table, plus what Q2/Q3 compare (per-split macro-F1, per-class recall, confusion)."""
    config, test = data["config"], data["test"]
    return {
        "number": number,
        "name": data["name"],
        "config": config,
        "hyper": {label: read(config) for label, read in HYPER_COLUMNS.items()},
        "macro_f1": test["macro_f1"],
        "accuracy": test["accuracy"],
        "per_split_macro_f1": test["macro_f1"]["values"],
        "num_splits": len(data["splits"]),
        "split_seeds": [split["seed"] for split in data["splits"]],
        # every image is in one part of each split; older files without the part sizes leave it open
        "num_images": sum(data["splits"][0].get(f"n_{part}", 0) for part in ("train", "val", "test")) or None,
        "recall": test["per_class_recall"],
        "class_names": data["class_names"],
        "confusion": test["confusion_matrix_sum"],
        "wall_s": float(data["timing"]["wall_s"]),
        "timing": data["timing"],
        "provenance": data.get("provenance") or {},
        "weights": (data.get("provenance") or {}).get("weights"),
    }


def paired_difference(a: Mapping, b: Mapping) -> dict[str, float]:
    """b's macro-F1 minus a's: mean ± std of the per-split differences when both ran on the same split seeds,
    else the difference of the means with the two spreads combined."""
    if a["split_seeds"] == b["split_seeds"]:
        return paired_differences(a["per_split_macro_f1"], b["per_split_macro_f1"])
    return {"mean": b["macro_f1"]["mean"] - a["macro_f1"]["mean"],
            "std": math.hypot(a["macro_f1"]["std"], b["macro_f1"]["std"])}


def _same_run(earlier: Mapping, later: Mapping) -> bool:
    """Both attempts came out of one training run: one command at one commit, on the same splits, in order."""
    a, b = earlier["provenance"], later["provenance"]
    return (bool(a.get("command")) and a.get("command") == b.get("command")
            and a.get("git_commit") == b.get("git_commit") and earlier["split_seeds"] == later["split_seeds"]
            and str(a.get("time_utc") or "") <= str(b.get("time_utc") or ""))


def reuses(attempts: list[dict]) -> dict[int, list[dict]]:
    """Per attempt number, what it took from an earlier attempt of the same run instead of making it again: the
    trained classifiers (same classifier recipe, and it trained none itself) and the per-split anomaly detectors
    (``attempts.shares_detector``). Each item: ``{"what", "from"}``."""
    out: dict[int, list[dict]] = {}
    for i, cur in enumerate(attempts):
        earlier = [prev for prev in attempts[:i] if _same_run(prev, cur)]
        trained_none = not cur["timing"].get("train_s")
        recipe = classifier_recipe(cur["config"])
        sources = {"trained classifiers": next((p for p in earlier if trained_none
                                                and classifier_recipe(p["config"]) == recipe), None),
                   "anomaly detectors": next((p for p in earlier if shares_detector(p["config"], cur["config"])),
                                             None)}
        out[cur["number"]] = [{"what": what, "from": p["number"]} for what, p in sources.items() if p]
    return out


def errors(attempt: Mapping) -> dict[str, Any]:
    """An attempt's summed confusion matrix as three kinds of error: defective images called good (``missed``, by
    true class), good images called defective (``false_alarms``), and one defect type taken for another."""
    names, matrix = attempt["class_names"], attempt["confusion"]
    g = names.index(GOOD) if GOOD in names else None
    defects = [i for i in range(len(names)) if i != g]
    missed = {names[i]: matrix[i][g] for i in defects if g is not None and matrix[i][g]}
    return {"missed": sum(missed.values()), "missed_by_class": missed,
            "false_alarms": sum(matrix[g][j] for j in defects) if g is not None else 0,
            "type_confusions": sum(matrix[i][j] for i in defects for j in defects if i != j)}


def why_best(best: Mapping, other: Mapping) -> list[dict]:
    """How the best attempt's errors differ from ``other``'s (the attempt it builds on), each kind that changed,
    the largest relative reduction first: ``{"kind", "before", "after", "missed_by_class"}``."""
    mine, theirs = errors(best), errors(other)
    kinds = [{"kind": k, "before": theirs[k], "after": mine[k], "missed_by_class": theirs["missed_by_class"]}
             for k in ("missed", "false_alarms", "type_confusions") if mine[k] != theirs[k]]
    return sorted(kinds, key=lambda c: ((c["after"] - c["before"]) / max(c["before"], 1), c["after"] - c["before"]))


def top_error(attempt: Mapping) -> dict | None:
    """The largest off-diagonal cell of an attempt's summed confusion matrix, or None without errors."""
    names, matrix = attempt["class_names"], attempt["confusion"]
    cells = [(matrix[i][j], i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
    count, i, j = max(cells, default=(0, 0, 0))
    if count == 0:
        return None
    return {"true": names[i], "pred": names[j], "count": count, "of": sum(matrix[i])}


def attempts_context(attempts: list[dict], evaluation: Mapping) -> dict:
    """Q2: the table, each step's measured effect, the best attempt and why it wins, and what each reuses."""
    previous = {a["number"]: None for a in attempts[:1]}
    previous.update({cur["number"]: prev for prev, cur in itertools.pairwise(attempts)})
    reused = reuses(attempts)
    for a in attempts:
        a["modifies"] = describe(a["config"], previous[a["number"]]["config"] if previous[a["number"]] else None)
        a["reuses"] = reused[a["number"]]
    steps = []
    for prev, cur in itertools.pairwise(attempts):
        diff = paired_difference(prev, cur)
        steps.append({"from": prev, "to": cur, "diff": diff, "verdict": verdict(diff)})
    best = best_attempt(attempts, macro_f1=itemgetter("macro_f1"))  # the rows hold the test macro-F1 at top level
    if evaluation["best_attempt"] != best["number"]:
        raise UserError(f"evaluation.json names attempt {evaluation['best_attempt']} as best, but the attempt_N.json "
                        f"files say attempt {best['number']}: evaluation.json is stale; re-run evaluate.py")
    baseline = attempts[0]
    runner_up = (best_attempt([a for a in attempts if a is not best], macro_f1=itemgetter("macro_f1"))
                 if len(attempts) > 1 else None)
    compared = previous.get(best["number"]) or runner_up  # the attempt the best one modifies
    over_baseline = paired_difference(baseline, best) if best is not baseline else None
    margin = paired_difference(runner_up, best) if runner_up else None
    reproduction = evaluation.get("reproduction") or []
    return {
        "attempts": attempts,
        "steps": steps,
        "best": best,
        "baseline": baseline,
        "runner_up": runner_up,
        "over_baseline": over_baseline,
        "margin": margin,
        "clear_winner": bool(margin and verdict(margin) == "improved"),
        "over_baseline_clear": bool(over_baseline and verdict(over_baseline) == "improved"),
        "compared": compared,
        "why": why_best(best, compared) if compared else [],
        "top_error": top_error(best),
        "reproduced": bool(reproduction) and all(r["equal"] for r in reproduction),
        "num_splits": best["num_splits"],
        "paired": all(a["split_seeds"] == baseline["split_seeds"] for a in attempts),
        "hyper_labels": list(HYPER_COLUMNS),
        "model": model_name(best["config"].get("arch", "")),
        "num_classes": len(best["class_names"]),
        "num_images": best["num_images"],
    }


def long_tail_context(q1: Mapping | None, attempt3: Mapping, attempt4: Mapping) -> dict:
    """Q3: attempt 4 against attempt 3, recall per defect class (rarest first) and macro-F1."""
    defects = [c for c in attempt4["class_names"] if c != GOOD]
    totals = {r["name"]: r["total"] for r in q1["rows"]} if q1 else {}
    defects.sort(key=lambda c: (totals.get(c, 0), c))
    rows = []
    for cls in defects:
        before, after = attempt3["recall"][cls]["mean"], attempt4["recall"][cls]["mean"]
        rows.append({"name": cls, "total": totals.get(cls), "before": before, "after": after,
                     "delta": after - before})
    diff = paired_difference(attempt3, attempt4)
    rarest = rows[0] if rows and (len(rows) == 1 or rows[0]["total"] != rows[1]["total"]) else None
    config = attempt4["config"]
    return {
        "rows": rows,
        "rarest": rarest,
        "mean_recall_delta": statistics.fmean(r["delta"] for r in rows) if rows else 0.0,
        "num_up": sum(round(r["delta"], 2) > 0 for r in rows),  # as the table shows them, to two decimals
        "num_down": sum(round(r["delta"], 2) < 0 for r in rows),
        "macro_f1_diff": diff,
        "macro_f1_verdict": verdict(diff),
        "tau": config["logit_adjust_tau"],
        "balanced_sampling": config["balanced_sampling"],
    }


def other_attempts_context(others: list[tuple[str, list[dict]]]) -> list[dict]:
    """Q2's and Q3's line for other categories: macro-F1 per attempt, the best, and attempt 4 against 3."""
    out = []
    for folder, runs in others:
        try:
            rows = [attempt_context(r["attempt"], r) for r in runs]
        except (KeyError, TypeError):
            continue  # another version's files: nothing to show
        long_tail = paired_difference(rows[2], rows[3])
        out.append({"category": runs[0]["category"], "folder": folder, "attempts": rows,
                    "best": best_attempt(rows, macro_f1=itemgetter("macro_f1")),
                    "long_tail": {"diff": long_tail, "verdict": verdict(long_tail)}})
    return out
