"""Synthetic result JSON for the report tests, shaped as the producer scripts write it (imported by the tests; not
a test module). Numbers depend on a seed, so two folders give two different reports."""

from __future__ import annotations

import numpy as np
from PIL import Image

from inspectkit.attempts import ATTEMPTS, compare
from inspectkit.metrics import classification_metrics, summarize_splits
from inspectkit.report import ATTEMPTS as ATTEMPT_NUMBERS
from inspectkit.results import read_json, write_json

CLASSES = ["good", "broken_large", "broken_small", "contamination"]


def _figure(path, width, height, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _provenance(demo, weights="none"):
    return {"command": "test", "git_commit": "0" * 40, "time_utc": "2026-01-01T00:00:00+00:00", "seed": 0,
            "weights": {"spec": weights, "file": None, "sha256": None, "pretrained": weights != "none"},
            "data_root": "/data/mvtec", "demo_data": demo}


def _attempt(number, rng, accuracy, splits=3):
    """attempt_N.json as train.py writes it, from random predictions that are right with probability ``accuracy``."""
    per_split = []
    for seed in range(splits):
        y_true = rng.integers(0, len(CLASSES), 60)
        wrong = rng.random(60) > accuracy
        y_pred = np.where(wrong, (y_true + rng.integers(1, len(CLASSES), 60)) % len(CLASSES), y_true)
        per_split.append({"seed": seed, "n_train": 120, "n_val": 40, "n_test": 60,
                          "test_metrics": classification_metrics(y_true, y_pred, CLASSES)})
    config = {**ATTEMPTS[number].to_dict(), "arch": "mobilenet_v2"}
    # as one train.py --attempt all run: attempt 3 trains nothing (it reuses attempt 2's classifiers)
    timing = {"wall_s": float(rng.uniform(50, 900)), **({} if number == 3 else {"train_s": 10.0})}
    return {"attempt": number, "name": ATTEMPTS[number].name, "class_names": CLASSES, "config": config,
            "splits": per_split, "test": summarize_splits([s["test_metrics"] for s in per_split], CLASSES),
            "timing": timing}


def write_evaluation(folder, prov):
    """evaluation.json as evaluate.py writes it, from the attempt files in ``folder``."""
    attempts = [read_json(folder / f"attempt_{n}.json") for n in ATTEMPT_NUMBERS]
    reproduction = [{"attempt": a["attempt"], "equal": True, "max_abs_difference": {"macro_f1": 0.0}}
                    for a in attempts]
    write_json(folder / "evaluation.json", {**compare(attempts), "reproduction": reproduction,
                                            "provenance": prov})


def anomaly_record(category, rng, prov, **config):
    """anomaly_<category>.json as anomaly.py writes it (the fields the report reads), numbers from ``rng``."""
    metrics = {"image_auroc": float(rng.uniform(0.9, 1)), "pixel_auroc": float(rng.uniform(0.9, 1)),
               "pro": float(rng.uniform(0.7, 0.95)), "f1_max": 0.9, "per_defect_image_auroc": {},
               "threshold": {"false_alarm_target": 0.01, "validation_images": 21},
               "at_threshold": {"image": {"recall": float(rng.uniform(0.5, 1)), "false_alarm_rate": 0.05}},
               "oracle": {"f1_max": 0.95}}
    baseline = {"method": "PaDiM-like Gaussian per patch position (Mahalanobis), same features",
                **{k: v * 0.9 for k, v in metrics.items() if isinstance(v, float)}}
    return {"category": category, "metrics": metrics, "baseline": baseline,
            "counts": {"train": {"good": 200}, "test": {"good": 20, "crack": 40}},
            "config": {"arch": "mobilenet_v2", "layers": ["features.3", "features.6"], "stride": 8, "image_size": 224,
                       "coreset_ratio": 0.01, "score_sigma": 1.0, "seed": 0, "input_shape": [224, 224],
                       "weights": "none", "device": "cpu", "threads": 2, **config},
            "memory_bank": {"patches_before_coreset": 163856, "coreset_size": 1638},
            "timings": {"total_s": float(rng.uniform(5, 30))}, "peak_rss_mb": 900.0, "provenance": prov}


def make_results(folder, *, seed=0, demo=True, category="bottle"):
    """A complete, plausible results folder (JSON and figures) whose numbers depend on ``seed``."""
    rng = np.random.default_rng(seed)
    prov = _provenance(demo)
    defects = {"broken_large": int(rng.integers(15, 25)), "broken_small": int(rng.integers(15, 25)),
               "contamination": int(rng.integers(15, 25))}
    train_good, test_good = int(rng.integers(150, 250)), int(rng.integers(15, 25))
    write_json(folder / f"stats_{category}.json", {
        "category": category, "defect_classes": sorted(defects), "num_defect_classes": 3,
        "counts": {"train": {"good": train_good}, "test": {"good": test_good, **defects}},
        "num_images": train_good + test_good + sum(defects.values()),
        "split": {"train": train_good, "test": test_good + sum(defects.values())},
        "image_sizes": [{"width": 900, "height": 900, "mode": "RGB", "count": 292}],
        "mask_area_fraction": {d: {"mean": float(rng.uniform(0.01, 0.1)), "min": 0.001, "max": 0.2}
                               for d in defects},
        "problems": [], "figures": {"counts": f"stats_{category}_counts.png"}, "provenance": prov})
    levels = sorted(rng.uniform(0.5, 0.98, 4))
    for n in ATTEMPT_NUMBERS:
        data = _attempt(n, rng, levels[n - 1])
        data["provenance"] = prov
        write_json(folder / f"attempt_{n}.json", data)
    write_evaluation(folder, prov)
    write_json(folder / f"anomaly_{category}.json", anomaly_record(category, rng, prov))
    instances = {d: n + int(rng.integers(0, 5)) for d, n in defects.items()}
    box_area = {"n": 60, "mean": float(rng.uniform(0.01, 0.1)), "min": 0.001, "median": 0.03, "max": 0.3}
    write_json(folder / f"export_{category}.json", {
        "class_names": sorted(defects),
        "images": {"with_instances": sum(defects.values()), "background": train_good + test_good,
                   "with_multiple_instances": int(rng.integers(1, 10))},
        "instances": {"total": sum(instances.values()), "per_class": instances},
        "box_size": {"all": {"area": box_area}},
        "polygon_iou": {"all": {"n": 60, "mean": float(rng.uniform(0.95, 0.99)), "min": 0.9}}, "provenance": prov})
    _figure(folder / "figures" / f"stats_{category}_counts.png", 900, 600, seed)
    _figure(folder / "figures" / f"anomaly_{category}.png", 1500, 400, seed)
    return folder
