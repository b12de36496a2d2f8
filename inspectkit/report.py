"""The report: collect the result JSON under results/ into one template context, render it to HTML and PDF
(Jinja2 + WeasyPrint), keep it within the page budget, and count each written answer's words.

Every number and every comparative claim in the report is computed here from the JSON; templates only format.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shlex
import statistics
from dataclasses import dataclass, field
from html.parser import HTMLParser
from operator import itemgetter
from pathlib import Path
from typing import Any

from .errors import UserError
from .evaluation import best_attempt
from .metrics import paired_differences
from .names import visible_text
from .results import REPO_ROOT, atomic_write, git_commit, read_json

TEMPLATES_DIR = REPO_ROOT / "templates"
MAX_PAGES = 3
FIGURE_SCALES = (1.0, 0.85, 0.7, 0.55)  # tried in order until the report fits MAX_PAGES
WORD_TARGETS = {"q2": 150, "q3": 150, "q4": 100, "q5": 150}
WORD_TOLERANCE = 0.20
ATTEMPTS = (1, 2, 3, 4)
SECTION_TITLES = {"header": "header", "q1": "Q1 dataset statistics", "q2": "Q2 four attempts",
                  "q3": "Q3 long tail", "q4": "Q4 good-only anomaly detection",
                  "q5": "Q5 labels for YOLO-World and SAM"}

# Published anchors (not our results): Roth et al., PatchCore, CVPR 2022, WideResNet-50 layers 2+3, as reported
# by the authors' patchcore-inspection repository per category (image AUROC, pixel AUROC).
PUBLISHED_PATCHCORE = {"bottle": {"image_auroc": 1.000, "pixel_auroc": 0.985},
                       "hazelnut": {"image_auroc": 1.000, "pixel_auroc": 0.987},
                       "metal_nut": {"image_auroc": 1.000, "pixel_auroc": 0.986}}


# ----------------------------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Which result files the report reads for one category, and the command that makes each missing one."""

    results_dir: Path
    category: str
    demo: bool
    data_root: str | None
    found: dict[str, Any] = field(default_factory=dict)  # key -> parsed JSON
    missing: dict[str, str] = field(default_factory=dict)  # key -> command that makes it

    def has(self, *keys: str) -> bool:
        return all(k in self.found for k in keys)


def input_files(category: str) -> dict[str, str]:
    """Result key -> file name under the results folder."""
    files = {"stats": f"stats_{category}.json"}
    files.update({f"attempt_{n}": f"attempt_{n}.json" for n in ATTEMPTS})
    files.update({"evaluation": "evaluation.json", "anomaly": f"anomaly_{category}.json",
                  "export": f"export_{category}.json"})
    return files


def find_category(results_dir: Path, category: str | None) -> str:
    """``--category`` if given, else the one category that has a ``stats_<category>.json`` in ``results_dir``."""
    if category:
        return category
    found = sorted(p.name[len("stats_"):-len(".json")] for p in results_dir.glob("stats_*.json")
                   if p.name != "stats_overview.json")
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no stats_<category>.json in {results_dir}, so the category is unknown; pass --category, "
                        f"or make the results first (python run_all.py --demo --out {results_dir})")
    raise UserError(f"{results_dir} holds results for several categories ({', '.join(found)}); "
                    "choose one with --category")


def _command(script: str, inputs: Inputs, *extra: str, out_flag: str = "--out") -> str:
    data = ["--demo"] if inputs.demo else ["--category", inputs.category, "--data-root", inputs.data_root or "DATA"]
    argv = ["python", script, *extra, *data, out_flag, str(inputs.results_dir)]
    return " ".join(shlex.quote(a) for a in argv)


def collect_inputs(results_dir: str | os.PathLike, category: str | None = None) -> Inputs:
    """Read every result JSON the report needs; note each missing one with the command that makes it."""
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise UserError(f"--results {results_dir} is a file, not a folder; pass the folder holding the result JSON")
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist; make the results first "
                        f"(python run_all.py --demo --out {results_dir}), or pass --results DIR")
    category = find_category(results_dir, category)
    found: dict[str, Any] = {}
    for key, name in input_files(category).items():
        path = results_dir / name
        if path.is_file():
            try:
                found[key] = read_json(path)
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read {path} ({exc.__class__.__name__}: {str(exc)[:80]}); "
                                "re-run the script that writes it") from None
            said = found[key].get("category") if isinstance(found[key], dict) else None
            if said is not None and said != category:  # e.g. a file copied from another category's results
                raise UserError(f"{path} holds results for category '{said}', not '{category}'; re-run the script "
                                f"that writes it for --category {category}, or pass --category {said}")
    provs = [d.get("provenance") or {} for d in found.values() if isinstance(d, dict)]
    demo = any(p.get("demo_data") for p in provs)
    data_root = next((p["data_root"] for p in provs if p.get("data_root")), None)
    inputs = Inputs(results_dir, category, demo, data_root, found)
    missing_attempts = [n for n in ATTEMPTS if f"attempt_{n}" not in found]
    for n in missing_attempts:
        which = "all" if len(missing_attempts) == len(ATTEMPTS) else str(n)
        inputs.missing[f"attempt_{n}"] = _command("train.py", inputs, "--attempt", which)
    commands = {"stats": _command("stats.py", inputs),
                "evaluation": _command("evaluate.py", inputs),
                "anomaly": _command("anomaly.py", inputs),
                "export": _command("export_labels.py", inputs, out_flag="--results")}  # its --out: the dataset
    for key, command in commands.items():
        if key not in found:
            inputs.missing[key] = command
    return inputs


def missing_message(inputs: Inputs) -> str:
    """One line naming each missing result file and the command that makes it."""
    files = input_files(inputs.category)
    commands = dict.fromkeys(inputs.missing.values())  # the same command may make several files
    parts = []
    for command in commands:
        names = [files[k] for k, c in inputs.missing.items() if c == command]
        parts.append(f"{', '.join(names)}: run `{command}`")
    return (f"missing results in {inputs.results_dir}: " + "; ".join(parts)
            + " (or pass --allow-missing to render placeholders)")


# ----------------------------------------------------------------------------------------------- helpers


def _figure(inputs: Inputs, name: str | None) -> str | None:
    """The path of a figure relative to the results folder, or None when it was not made."""
    return f"figures/{name}" if name and (inputs.results_dir / "figures" / name).is_file() else None


def _join(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def verdict(diff: dict[str, float]) -> str:
    """'improved', 'worsened' or 'did not clearly change', from a paired difference's mean and its spread."""
    if diff["mean"] > 0 and diff["mean"] > diff["std"]:
        return "improved"
    if diff["mean"] < 0 and -diff["mean"] > diff["std"]:
        return "worsened"
    return "did not clearly change"


# ----------------------------------------------------------------------------------------------- Q1


def stats_context(stats: dict) -> dict:
    """Q1: classes, counts per split, image sizes, mask areas and the long-tail ratio."""
    counts = stats["counts"]
    classes = ["good", *stats["defect_classes"]]
    rows = []
    for cls in classes:
        train = counts["train"].get(cls, 0)
        test = counts["test"].get(cls, 0)
        area = stats["mask_area_fraction"].get(cls) if cls != "good" else None
        rows.append({"name": cls, "train": train, "test": test, "total": train + test, "mask_area": area})
    good_total = rows[0]["total"]
    defect_rows = rows[1:]
    defect_total = sum(r["total"] for r in defect_rows)
    rarest = min(defect_rows, key=lambda r: r["total"]) if defect_rows else None
    rarest_names = [r["name"] for r in defect_rows if rarest and r["total"] == rarest["total"]]
    sizes = stats["image_sizes"]
    return {
        "category": stats["category"],
        "defect_classes": stats["defect_classes"],
        "num_defect_classes": stats["num_defect_classes"],
        "rows": rows,
        "num_images": stats["num_images"],
        "split": stats["split"],
        "image_sizes": sizes,
        "main_size": sizes[0] if sizes else None,
        "good_total": good_total,
        "defect_total": defect_total,
        "good_share": good_total / (good_total + defect_total) if good_total + defect_total else 0.0,
        "rarest": rarest,
        "rarest_names": rarest_names,  # several when defect classes tie for the smallest count
        "head_to_tail": good_total / rarest["total"] if rarest and rarest["total"] else None,
        "problems": len(stats.get("problems") or []),
    }


# ----------------------------------------------------------------------------------------------- Q2, Q3

# Hyper-parameters shown in the Q2 table (config key -> column label), in table order.
CONFIG_LABELS = {"epochs": "epochs", "lr": "lr head / backbone", "optimizer": "optim.",
                 "batch_size": "batch", "image_size": "px", "loss": "loss"}
# Config keys compared between attempts to say what a step changed, with how the prose names them.
CHANGE_LABELS = {"train_levels": "which backbone levels are trained", "head": "the head",
                 "image_size": "the input size", "augmentation": "augmentation", "optimizer": "the optimizer",
                 "schedule": "the schedule", "lr_head": "the head's learning rate",
                 "lr_backbone": "the backbone's learning rate", "weight_decay": "weight decay",
                 "batch_size": "the batch size", "loss": "the loss", "logit_adjust_tau": "logit adjustment",
                 "balanced_sampling": "class-balanced sampling", "early_stopping_patience": "early stopping",
                 "test_time_views": "test-time augmentation", "anomaly_gate": "the anomaly gate"}


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_short(v) for v in value) if value else "none"
    return "none" if value is None else str(value).replace("_", " ")


def _lr(config: dict) -> str:
    backbone = f"{config['lr_backbone']:.0e}" if config.get("train_levels") else "frozen"
    return f"{config['lr_head']:.0e} / {backbone}"


def attempt_context(number: int, data: dict) -> dict:
    """One row of the Q2 table, plus what Q2/Q3 compare (per-split macro-F1, per-class recall, confusion)."""
    config = data["config"]
    test = data["test"]
    return {
        "number": number,
        "name": data["name"],
        "what_changed": config["what_changed"],
        "config": config,
        "hyper": {label: (_lr(config) if key == "lr" else _short(config[key])) for key, label in
                  CONFIG_LABELS.items()},
        "macro_f1": test["macro_f1"],
        "accuracy": test["accuracy"],
        "per_split_macro_f1": test["macro_f1"]["values"],
        "num_splits": len(data["splits"]),
        "split_seeds": [split["seed"] for split in data["splits"]],
        "recall": test["per_class_recall"],
        "class_names": data["class_names"],
        "confusion": test["confusion_matrix_sum"],
        "wall_s": float(data["timing"]["wall_s"]),
        "weights": (data.get("provenance") or {}).get("weights"),
    }


def config_changes(before: dict, after: dict) -> list[dict]:
    """The hyper-parameters (CHANGE_LABELS) that differ between two attempts' configs: key and label."""
    return [{"key": key, "label": label} for key, label in CHANGE_LABELS.items() if before.get(key) != after.get(key)]


def paired_difference(a: dict, b: dict) -> dict[str, float]:
    """b's macro-F1 minus a's: mean ± std of the per-split differences when both ran on the same split seeds,
    else the difference of the means with the two spreads combined."""
    if a["split_seeds"] == b["split_seeds"]:
        return paired_differences(a["per_split_macro_f1"], b["per_split_macro_f1"])
    return {"mean": b["macro_f1"]["mean"] - a["macro_f1"]["mean"],
            "std": math.hypot(a["macro_f1"]["std"], b["macro_f1"]["std"])}


def top_error(attempt: dict) -> dict | None:
    """The largest off-diagonal cell of an attempt's summed confusion matrix, or None without errors."""
    names, matrix = attempt["class_names"], attempt["confusion"]
    cells = [(matrix[i][j], i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
    count, i, j = max(cells, default=(0, 0, 0))
    if count == 0:
        return None
    return {"true": names[i], "pred": names[j], "count": count, "of": sum(matrix[i])}


def attempts_context(attempts: list[dict], evaluation: dict) -> dict:
    """Q2: the table, each step's measured effect, the best attempt and the steps that got it there."""
    steps = []
    for prev, cur in itertools.pairwise(attempts):
        diff = paired_difference(prev, cur)
        steps.append({"from": prev, "to": cur, "diff": diff, "verdict": verdict(diff),
                      "changes": config_changes(prev["config"], cur["config"])})
    best = best_attempt(attempts, macro_f1=itemgetter("macro_f1"))  # the rows hold the test macro-F1 at top level
    if evaluation["best_attempt"] != best["number"]:
        raise UserError(f"evaluation.json names attempt {evaluation['best_attempt']} as best, but the attempt_N.json "
                        f"files say attempt {best['number']}: evaluation.json is stale; re-run evaluate.py")
    baseline = attempts[0]
    runner_up = (best_attempt([a for a in attempts if a is not best], macro_f1=itemgetter("macro_f1"))
                 if len(attempts) > 1 else None)
    over_baseline = paired_difference(baseline, best) if best is not baseline else None
    margin = paired_difference(runner_up, best) if runner_up else None
    largest = max(steps, key=lambda s: s["diff"]["mean"]) if steps else None
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
        "top_error": top_error(best),
        "helpful_steps": [s for s in steps if s["verdict"] == "improved" and s["to"]["number"] <= best["number"]],
        "largest_step": largest,
        "reproduced": bool(reproduction) and all(r["equal"] for r in reproduction),
        "reproduction_gap": max((max(r["max_abs_difference"].values()) for r in reproduction), default=None),
        "num_splits": best["num_splits"],
        "paired": all(a["split_seeds"] == baseline["split_seeds"] for a in attempts),
        "hyper_labels": list(CONFIG_LABELS.values()),
    }


def long_tail_context(q1: dict | None, attempt3: dict, attempt4: dict) -> dict:
    """Q3: attempt 4 against attempt 3, recall per defect class (rarest first) and macro-F1."""
    defects = [c for c in attempt4["class_names"] if c != "good"]
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
        "num_up": sum(r["delta"] > 0 for r in rows),
        "num_down": sum(r["delta"] < 0 for r in rows),
        "macro_f1_diff": diff,
        "macro_f1_verdict": verdict(diff),
        "tau": config["logit_adjust_tau"],
        "balanced_sampling": config["balanced_sampling"],
    }


# ----------------------------------------------------------------------------------------------- Q4, Q5


def anomaly_context(inputs: Inputs, data: dict) -> dict:
    """Q4: our detector's metrics, the baseline's (when it ran), and the published PatchCore anchor."""
    config, metrics, baseline = data["config"], data["metrics"], data["baseline"]
    keys = ("image_auroc", "pixel_auroc", "pro")
    return {
        "metrics": metrics,
        "baseline": baseline,
        "baseline_name": baseline["method"].split(" (")[0].split(",")[0] if baseline else None,
        "arch": config["arch"],
        "layers": config["layers"],
        "image_size": config["image_size"],
        "coreset_ratio": config["coreset_ratio"],
        "bank": data["memory_bank"],
        "beats_baseline": [k for k in keys if baseline and metrics[k] is not None and baseline[k] is not None
                           and metrics[k] > baseline[k]],
        "published": None if inputs.demo else PUBLISHED_PATCHCORE.get(inputs.category),
        "total_s": data["timings"]["total_s"],
        "peak_rss_mb": data["peak_rss_mb"],
        "figure": _figure(inputs, f"anomaly_{inputs.category}.png"),
        "weights": data["provenance"]["weights"],
        "input_shape": config.get("input_shape"),
        "others": _other_categories(inputs),
        "threshold": _threshold_context(metrics),
    }


def _threshold_context(metrics: dict) -> dict | None:
    """Which threshold Q4's verdicts use (the good-only one) and the test rates at it, with the oracle beside."""
    at, info, oracle = metrics.get("at_threshold"), metrics.get("threshold"), metrics.get("oracle")
    if not (isinstance(at, dict) and isinstance(info, dict) and isinstance(oracle, dict)):
        return None  # an older anomaly JSON: Q4 then names no threshold
    return {"false_alarm_target": info["false_alarm_target"], "validation_images": info["validation_images"],
            "image": at["image"], "pixel": at.get("pixel"), "oracle_f1": oracle["f1_max"]}


def _other_categories(inputs: Inputs) -> list[dict]:
    """The other categories of ``anomaly.py --category all`` (anomaly_summary.json), when it ran; else none."""
    path = inputs.results_dir / "anomaly_summary.json"
    try:
        rows = read_json(path)["categories"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("status") == "ok" and r.get("category") != inputs.category
            and r.get("image_auroc") is not None]


def other_category_attempts(inputs: Inputs) -> list[dict]:
    """Q2's and Q3's line for other categories: each sub-folder of the results folder (e.g. ``results/screw``)
    whose ``attempt_1..4.json`` all exist for a category other than the report's; macro-F1 per attempt, the best,
    and attempt 4 against 3."""
    others = []
    for folder in sorted(p for p in inputs.results_dir.iterdir() if p.is_dir()):
        try:
            runs = [read_json(folder / f"attempt_{n}.json") for n in ATTEMPTS]
            category = runs[0]["category"]
            rows = [attempt_context(n, r) for n, r in zip(ATTEMPTS, runs, strict=True)]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a complete set of attempts (or not attempts at all): nothing to show
        if category == inputs.category or any(r.get("category") != category for r in runs):
            continue
        best = best_attempt(rows, macro_f1=itemgetter("macro_f1"))
        long_tail = paired_difference(rows[2], rows[3])  # Q3's step, attempt 4 against 3
        others.append({"category": category, "folder": folder.name, "attempts": rows, "best": best,
                       "long_tail": {"diff": long_tail, "verdict": verdict(long_tail)}})
    return others


def export_context(inputs: Inputs, data: dict) -> dict:
    """Q5: instance counts per defect type, multi-instance images, box sizes and polygon fidelity, and the figure
    of exported labels (or, without it, the command that makes the export it is drawn from)."""
    return {
        "per_class": data["instances"]["per_class"],
        "total": data["instances"]["total"],
        "defect_images": data["images"]["with_instances"],
        "background_images": data["images"]["background"],
        "multi_instance_images": data["images"]["with_multiple_instances"],
        "box_area": data["box_size"]["all"]["area"],
        "polygon_iou": data["polygon_iou"]["all"],
        "figure": _figure(inputs, export_figure_name(inputs.category)),
        "export_dir": data.get("out"),
        "export_command": _command("export_labels.py", inputs, "--out", str(data.get("out") or "DIR"),
                                   "--overwrite", out_flag="--results"),
    }


def export_figure_name(category: str) -> str:
    """The Q5 figure's file name under <results>/figures/."""
    return f"export_{category}_labels.png"


def find_export_dir(data: dict) -> Path | None:
    """The folder ``export_<category>.json`` says it exported to, if it is on this machine and still holds that
    export (its summary has the same provenance); relative paths are tried from here, then from the repository."""
    from .export.output import MARKER

    out = Path(data.get("out") or "")
    for folder in (out,) if out.is_absolute() else (out, REPO_ROOT / out):
        try:
            if read_json(folder / MARKER).get("provenance") == data.get("provenance"):
                return folder
        except (OSError, ValueError, AttributeError):  # missing, unreadable or not an export summary
            continue
    return None


def draw_export_figure(inputs: Inputs) -> str | None:
    """Draw the Q5 figure into <results>/figures/ from the export files when they are here, else keep one drawn
    earlier; one line saying which (None without export results). The export folder is not committed, so on a
    fresh clone the committed figure is kept, and without one Q5 shows a note instead."""
    if not inputs.has("export"):
        return None
    from .export.output import MARKER
    from .figures.export import export_labels_figure, read_export

    data = inputs.found["export"]
    path = inputs.results_dir / "figures" / export_figure_name(inputs.category)
    folder = find_export_dir(data)
    if folder is None:
        reason = f"export_{inputs.category}.json's export in {data.get('out')} is not on this machine"
        if (Path(data.get("out") or "") / MARKER).is_file():
            reason = f"{data.get('out')} holds another export than export_{inputs.category}.json describes"
    else:
        try:
            images, source = read_export(folder)
            reason = f"the export in {folder} holds no defect instances"
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:  # a damaged or foreign export
            images, reason = [], f"cannot read the export in {folder} ({exc.__class__.__name__}: {str(exc)[:80]})"
        if images:
            export_labels_figure(images, source, path)
            return f"Q5 figure drawn from {folder} ({source}): {path}"
    if path.is_file():
        return f"Q5 figure kept as drawn earlier ({reason}): {path}"
    return f"Q5 figure left out ({reason}); the report says so"


def _weights_note(weights: dict | None) -> str | None:
    if not weights:
        return None
    if weights.get("spec") == "none":
        return "random-init weights (--weights none)"
    if weights.get("spec") == "file":
        return f"weights file {Path(weights.get('file') or '').name}"
    return "torchvision ImageNet weights"


def build_context(inputs: Inputs, *, name: str = "", student_id: str = "", allow_missing: bool = False) -> dict:
    """Everything the templates show, computed from the results; sections without inputs become placeholders."""
    if inputs.missing and not allow_missing:
        raise UserError(missing_message(inputs))
    found = inputs.found
    files = input_files(inputs.category)

    def read(builder, keys: tuple[str, ...], *args):
        """``builder(*args)``; a key missing from the JSON becomes a UserError naming the files to re-make."""
        try:
            return builder(*args)
        except (KeyError, IndexError, TypeError) as exc:
            names = ", ".join(files[k] for k in keys)
            raise UserError(f"{names} in {inputs.results_dir} lack(s) what the report reads ({exc.__class__.__name__}:"
                            f" {exc}); it was written by another version: re-run the script that makes it") from None

    q1 = read(stats_context, ("stats",), found["stats"]) if inputs.has("stats") else None
    attempts = [read(attempt_context, (f"attempt_{n}",), n, found[f"attempt_{n}"])
                for n in ATTEMPTS if f"attempt_{n}" in found]
    complete = len(attempts) == len(ATTEMPTS)
    q2 = (read(attempts_context, ("evaluation",), attempts, found["evaluation"])
          if complete and inputs.has("evaluation") else None)
    others = other_category_attempts(inputs)
    if q2:
        q2["others"] = others
    q3 = read(long_tail_context, ("attempt_3", "attempt_4"), q1, attempts[2], attempts[3]) if complete else None
    if q3:
        q3["others"] = others
    q4 = read(anomaly_context, ("anomaly",), inputs, found["anomaly"]) if inputs.has("anomaly") else None
    q5 = read(export_context, ("export",), inputs, found["export"]) if inputs.has("export") else None

    weights = sorted({note for note in [*(_weights_note(a["weights"]) for a in attempts),
                                        _weights_note(q4["weights"]) if q4 else None] if note})
    random_init = any("random-init" in w for w in weights)

    def missing_for(*keys: str) -> list[dict]:
        return [{"file": files[k], "command": inputs.missing[k]} for k in keys if k in inputs.missing]

    return {
        "category": inputs.category,
        "name": name,
        "student_id": student_id,
        "demo": inputs.demo,
        "random_init": random_init,
        "weights": weights,
        "data_name": Path(inputs.data_root).name if inputs.data_root else None,  # not the builder's full path
        "commit": git_commit(),
        "sources": [files[k] for k in files if k in found],
        "missing": missing_for(*files),
        "q1": q1,
        "q1_missing": missing_for("stats"),
        "q1_figure": _figure(inputs, found["stats"].get("figures", {}).get("counts")) if q1 else None,
        "q2": q2,
        "q2_missing": missing_for(*(f"attempt_{n}" for n in ATTEMPTS), "evaluation"),
        "q3": q3,
        "q3_missing": missing_for("stats", *(f"attempt_{n}" for n in (3, 4))),
        "q4": q4,
        "q4_missing": missing_for("anomaly"),
        "q5": q5,
        "q5_missing": missing_for("export"),
        "figure_scale": 1.0,
        "word_counts": {},
    }


# ----------------------------------------------------------------------------------------------- rendering


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _pm(stat: dict | None, digits: int = 3) -> str:
    if not stat:
        return "n/a"
    return f"{_fmt(stat['mean'], digits)} ± {_fmt(stat['std'], digits)}"


def _pct(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}".replace("-", "−")


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
                             undefined=jinja2.StrictUndefined, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pm=_pm, pct=_pct, signed=_signed, join_and=_join)
    return env


def render_html(context: dict) -> str:
    """The report as one HTML string (templates/report.html.j2 and its partials), in its visible form: a name that
    is not UTF-8 (from the results, or from --name) shows as ``\\xNN``, which the HTML and PDF writers accept."""
    return visible_text(_environment().get_template("report.html.j2").render(**context))


README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def readme_results(context: dict, results_dir: str) -> str:
    """The README's Results block (Markdown), from the same context as the report."""
    return _environment().get_template("readme_results.md.j2").render(**context, results_dir=results_dir)


def update_readme(path: str | os.PathLike, block: str) -> Path:
    """Replace the text between README_START and README_END in ``path`` with ``block``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--readme {path} does not exist")
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(f"{path} has no '{README_START}' ... '{README_END}' block; add those two lines where the "
                        "results table should go")
    new = text[: start + len(README_START)] + "\n" + block.strip() + "\n" + text[end:]
    return write_atomic(path, new)


class _AnswerText(HTMLParser):
    """Collects the text inside elements marked ``data-answer="qN"`` (the prose of each written answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "hr", "meta", "link", "col", "wbr"):
            return
        answer = dict(attrs).get("data-answer")
        self.stack.append(answer or (self.stack[-1] if self.stack else None))

    def handle_endtag(self, tag):
        if self.stack and tag not in ("br", "img", "hr", "meta", "link", "col", "wbr"):
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1]:
            self.text.setdefault(self.stack[-1], []).append(data)


WORD = re.compile(r"[^\W_]")


def count_words(text: str) -> int:
    """Whitespace-separated tokens that contain at least one letter or digit."""
    return sum(1 for token in text.split() if WORD.search(token))


def word_counts(html: str) -> dict[str, int]:
    """Words per written answer (``data-answer`` elements), keyed q1..q5."""
    parser = _AnswerText()
    parser.feed(html)
    return {key: count_words(" ".join(parts)) for key, parts in sorted(parser.text.items())}


def word_budget(counts: dict[str, int]) -> dict[str, dict]:
    """Each answer's count against its target, with ``ok`` when within ±WORD_TOLERANCE."""
    out = {}
    for key, target in WORD_TARGETS.items():
        n = counts.get(key, 0)
        out[key] = {"words": n, "target": target, "ok": abs(n - target) <= WORD_TOLERANCE * target}
    return out


@dataclass
class Rendered:
    """A rendered report: its HTML, the WeasyPrint document, and the figure scale that made it fit."""

    html: str
    document: Any
    figure_scale: float
    word_counts: dict[str, int]
    base: Any = None  # what keeps the document's base folder reachable until it is written (see _base_folder)

    @property
    def pages(self) -> int:
        return len(self.document.pages)


def _base_folder(results: Path) -> tuple[str, Any]:
    """The folder WeasyPrint resolves the figures against, and what must live as long as the document (it loads
    the figures when the PDF is written). A results folder whose name is not UTF-8 is reached through a link with a
    plain name: WeasyPrint turns the base into a URL and back into another name, and would draw no figure."""
    import tempfile

    if visible_text(str(results)) == str(results):
        return str(results), None
    folder = tempfile.TemporaryDirectory(prefix="inspectkit-report-")  # removed when the document is dropped
    link = Path(folder.name) / "results"
    link.symlink_to(results.resolve(), target_is_directory=True)
    return str(link), folder


def _render_document(html: str, base: str):
    from weasyprint import CSS, HTML

    stylesheet = CSS(filename=str(TEMPLATES_DIR / "report.css"))
    return HTML(string=html, base_url=base).render(stylesheets=[stylesheet])


def overflowing_section(document) -> str:
    """The section whose content runs past page MAX_PAGES (the last one that starts on or before it)."""
    last = "header"
    for index, page in enumerate(document.pages):
        if index >= MAX_PAGES:
            break
        for anchor in page.anchors:
            if anchor in SECTION_TITLES:
                last = anchor
    return SECTION_TITLES[last]


class PageBudgetError(UserError):
    """The report does not fit MAX_PAGES pages even with the smallest figures; the scripts exit 1 on it."""

    exit_code = 1


def render_report(context: dict, base_url: str | os.PathLike) -> Rendered:
    """Render, shrinking the figures step by step until it fits MAX_PAGES; a UserError naming the section if not.

    The word counts go into the context (the closing line shows them), so each layout is rendered twice.
    """
    base, keep = _base_folder(Path(base_url))
    document = html = None
    counts: dict[str, int] = {}
    for scale in FIGURE_SCALES:
        context = {**context, "figure_scale": scale}
        counts = word_counts(render_html(context))
        html = render_html({**context, "word_counts": counts})
        document = _render_document(html, base)
        if len(document.pages) <= MAX_PAGES:
            return Rendered(html, document, scale, counts, keep)
    raise PageBudgetError(f"the report has {len(document.pages)} pages even with figures at "
                          f"{int(FIGURE_SCALES[-1] * 100)} %; {overflowing_section(document)} runs past "
                          f"page {MAX_PAGES}: shorten it")


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes or text through ``results.atomic_write``: no half-written report, and the umask honoured."""
    return atomic_write(path, data)
