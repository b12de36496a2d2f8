"""Q4 of the report, computed from the per-category detector results (``anomaly_<category>.json``, the one source
of the detector's numbers): one table row per category that has a result, the comparison with the baseline at the
precision the table shows, the threshold worded as it is set, the method described from the record's own config,
and whether the categories were made with the same settings (checked, never assumed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..anomaly_results import METRICS, settings_differences
from .classification import model_name

# Published anchors (not our results): Roth et al., PatchCore, CVPR 2022, WideResNet-50 layers 2+3, as reported
# by the authors' patchcore-inspection repository per category (image AUROC, pixel AUROC).
PUBLISHED_PATCHCORE = {"bottle": {"image_auroc": 1.000, "pixel_auroc": 0.985},
                       "hazelnut": {"image_auroc": 1.000, "pixel_auroc": 0.987},
                       "metal_nut": {"image_auroc": 1.000, "pixel_auroc": 0.986}}
# How the prose names a detector setting that differs between categories.
SETTING_NAMES = {"seed": "seed", "image_size": "input size", "coreset_ratio": "memory-bank share",
                 "weights": "weights", "layers": "feature depths", "arch": "backbone", "pad": "border margin",
                 "score_sigma": "score smoothing", "sigma": "map smoothing", "sampler": "patch sampler",
                 "max_bank": "memory-bank cap", "projection_dim": "projection size", "stride": "grid step",
                 "batch_size": "batch size", "validation_share": "held-out share", "false_alarm": "false-alarm target"}
METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO"}
DIGITS = 3  # the table's precision: comparisons are made at it, so the prose never contradicts the table


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def compare_with_baseline(metrics: Mapping, baseline: Mapping | None) -> dict[str, list[str]]:
    """Which metrics (by name) are higher, equal and lower than the baseline's, as the table shows them (three
    decimals)."""
    out: dict[str, list[str]] = {"higher": [], "equal": [], "lower": []}
    for key in METRICS:
        ours, theirs = _rounded(metrics.get(key)), _rounded((baseline or {}).get(key))
        if ours is None or theirs is None:
            continue
        out["higher" if ours > theirs else "lower" if ours < theirs else "equal"].append(METRIC_NAMES[key])
    return out


def comparison_words(compared: Mapping[str, list[str]]) -> list[str]:
    """'higher than the Gaussian baseline on PRO', 'equal on the rest': the comparison as phrases, in that order."""
    words = []
    if compared["higher"]:
        words.append(f"higher than the Gaussian baseline on {_join(compared['higher'])}")
    if compared["equal"]:
        rest = compared["higher"] and not compared["lower"]
        words.append(f"equal {'on the rest' if rest else 'to it on ' + _join(compared['equal'])}"
                     if compared["higher"] else f"equal to the Gaussian baseline on {_join(compared['equal'])}")
    if compared["lower"]:
        words.append(f"lower {'on' if words else 'than the Gaussian baseline on'} {_join(compared['lower'])}")
    return words


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _text(value: Any) -> str | None:
    """A description field that may be a string or a record with a ``description`` (fields added later)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("description"), str):
        return value["description"]
    return None


def method(record: Mapping) -> dict:
    """The detector as the record says it was made: backbone, feature depths, grid, input, memory bank, scoring."""
    config = record["config"]
    weights = (record.get("provenance") or {}).get("weights") or {}
    scoring = _text(record.get("scoring")) or _text(config.get("scoring"))
    if scoring is None and config.get("score_sigma") is not None:
        relative = ((record.get("position") or {}).get("applied")
                    and " (each patch's distance taken relative to the held-out good images' distances at that "
                        "place in the frame)") or ""
        distance = "the highest whitened patch distance" if config.get("whiten") else "the highest patch distance"
        scoring = distance + relative + (", after smoothing the distances over neighbouring patches"
                                         if config["score_sigma"] else "")
    return {"model": model_name(config.get("arch", "")), "pretrained": bool(weights.get("pretrained", True)),
            "depths": len(config.get("layers") or []), "stride": config.get("stride"),
            "input_shape": config.get("input_shape"), "image_size": config.get("image_size"),
            "coreset_ratio": config.get("coreset_ratio"), "scoring": scoring,
            "border": _text(record.get("border")) or _text(config.get("border"))}


def category_row(record: Mapping) -> dict:
    """One row of the Q4 table: a category's metrics, its baseline's, and its own timing."""
    counts = (record.get("counts") or {}).get("test") or {}
    return {"category": record["category"], "metrics": record["metrics"], "baseline": record.get("baseline"),
            "test_images": sum(counts.values()) or None, "total_s": (record.get("timings") or {}).get("total_s"),
            "compare": comparison_words(compare_with_baseline(record["metrics"], record.get("baseline"))),
            "time_utc": (record.get("provenance") or {}).get("time_utc")}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)) or (isinstance(value, str) and len(value) > 16):
        return "another"
    return "none" if value is None else str(value)


def differences_in_words(differences: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """'seed (bottle 0, screw 1)' for each setting that differs; weights and long values only say which differ."""
    words = []
    for key, values in differences.items():
        name = SETTING_NAMES.get(key, key.replace("_", " "))
        if key == "weights" or any(_value(v) == "another" for v in values.values()):
            groups: dict[str, list[str]] = {}
            for cat, v in values.items():
                groups.setdefault(repr(v), []).append(cat)
            words.append(f"{name} ({' vs '.join(', '.join(g) for g in groups.values())})")
        else:
            words.append(f"{name} ({', '.join(f'{cat} {_value(v)}' for cat, v in values.items())})")
    return words


def threshold_context(metrics: Mapping) -> dict | None:
    """Which threshold the verdicts use (set on held-out good images) and the test rates at it, oracle beside."""
    at, info, oracle = metrics.get("at_threshold"), metrics.get("threshold"), metrics.get("oracle")
    if not (isinstance(at, Mapping) and isinstance(info, Mapping) and isinstance(oracle, Mapping)):
        return None  # an older anomaly JSON: Q4 then names no threshold
    return {"false_alarm_target": info["false_alarm_target"], "validation_images": info["validation_images"],
            "image": at["image"], "oracle_f1": oracle["f1_max"]}


def anomaly_context(category: str, detectors: Mapping[str, Mapping], *, demo: bool, figure: str | None) -> dict:
    """Q4: the report's category first, then every other category with a detector result, each from its own
    file; the settings check across them; the method and threshold of the report's category."""
    own = detectors[category]
    others = [detectors[c] for c in sorted(detectors) if c != category]
    shown = {category: own, **{r["category"]: r for r in others}}
    differences = settings_differences(shown) if len(shown) > 1 else {}
    baseline = own.get("baseline")
    return {
        "rows": [category_row({**own, "category": category}), *(category_row(r) for r in others)],
        "own": category_row({**own, "category": category}),
        "others": [r["category"] for r in others],
        "same_settings": not differences,
        "differences": differences_in_words(differences),
        "baseline_name": baseline["method"].split(" (")[0].split(",")[0] if baseline else None,
        "method": method(own),
        "bank": own.get("memory_bank") or {},
        "peak_rss_mb": own.get("peak_rss_mb"),
        "published": None if demo else PUBLISHED_PATCHCORE.get(category),
        "pro_fpr_limit": own["metrics"].get("pro_fpr_limit"),
        "figure": figure,
        "weights": (own.get("provenance") or {}).get("weights"),
        "threshold": threshold_context(own["metrics"]),
    }
