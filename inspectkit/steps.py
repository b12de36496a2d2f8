"""The steps of run_all.py: which root script each runs, the command line it is given (as a user would type it,
so that each script's own parser and defaults stay the single source), and the headline of what it wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from .attempts import best_attempt
from .cli import DEMO_WEIGHTS
from .errors import UserError
from .report import collect_inputs
from .synthetic import DEMO_CATEGORY

# step name -> root script (module) it runs, in pipeline order
STEPS = {"stats": "stats", "train": "train", "evaluate": "evaluate", "anomaly": "anomaly",
         "export": "export_labels", "report": "build_report"}

# Short settings for --demo: small, procedural data; the point is a complete PDF in minutes, not good numbers.
DEMO_ARCH = "resnet18"
DEMO_FLAGS = {
    "train": ["--epochs", "30", "--splits", "2", "--image-size", "96"],
    "anomaly": ["--image-size", "128", "--coreset-ratio", "0.1"],
}

# The flags only some steps read: refused when --only leaves out every one of those steps.
STEP_FLAGS = {"arch": ("train", "anomaly"), "weights": ("train", "anomaly"), "device": ("train", "evaluate", "anomaly"),
              "name": ("report",), "student_id": ("report",)}


def _data_flags(args: argparse.Namespace) -> list[str]:
    if args.demo:
        return ["--demo"]
    flags = ["--category", args.category] if args.category else []
    return flags + (["--data-root", args.data_root] if args.data_root else [])


def _model_flags(args: argparse.Namespace) -> list[str]:
    arch = args.arch or (DEMO_ARCH if args.demo else None)
    weights = args.weights or (DEMO_WEIGHTS if args.demo else None)
    flags = ["--device", args.device]
    flags += ["--arch", arch] if arch else []
    return flags + (["--weights", weights] if weights else [])


def step_argv(step: str, args: argparse.Namespace) -> list[str]:
    """The command-line arguments of one step's script, as a user would type them."""
    out = ["--out", args.out]
    demo = DEMO_FLAGS.get(step, []) if args.demo else []
    if step == "stats":
        return [*_data_flags(args), *out]
    if step == "train":
        return ["--attempt", "all", *_data_flags(args), *_model_flags(args), *demo, *out]
    if step == "evaluate":
        return [*_data_flags(args), "--device", args.device, *out]
    if step == "anomaly":
        return [*_data_flags(args), *_model_flags(args), *demo, *out]
    if step == "export":  # its --out is the exported dataset; its JSON goes to --results
        exports = Path(args.out) / "exports" / (DEMO_CATEGORY if args.demo else args.category or "dataset")
        return [*_data_flags(args), "--results", args.out, "--out", str(exports), "--overwrite", *demo]
    if step == "report":
        report = ["--results", args.out, "--pdf", "--name", args.name, "--student-id", args.student_id]
        return report + (["--category", args.category] if args.category and not args.demo else [])
    raise ValueError(f"unknown step {step}")


def summary_rows(out: Path, category: str | None, timings: dict[str, float], report: dict | None) -> list[tuple]:
    """(step, seconds, headline result) for each step that ran, read back from the results it wrote."""
    try:
        found = collect_inputs(out, category).found
    except UserError:  # e.g. stats not run, so the category is unknown: no headlines, only timings
        found = {}
    headline = {}
    if "stats" in found:
        s = found["stats"]
        headline["stats"] = f"{s['num_images']} images, {s['num_defect_classes']} defect classes"
    attempts = {k: v for k, v in found.items() if k.startswith("attempt_")}
    if attempts:
        best = best_attempt(list(attempts.values()))
        f1 = best["test"]["macro_f1"]
        headline["train"] = (f"best: attempt {best['attempt']} ({best['name']}), macro-F1 "
                             f"{f1['mean']:.3f} ± {f1['std']:.3f}")
    if "evaluation" in found:
        headline["evaluate"] = "evaluation.json"
    if "anomaly" in found:
        m = found["anomaly"]["metrics"]
        headline["anomaly"] = f"image AUROC {m['image_auroc']:.3f}, pixel AUROC {m['pixel_auroc']:.3f}"
    if "export" in found:
        headline["export"] = f"{found['export']['instances']['total']} instances"
    if report:
        headline["report"] = f"{report['pages']} page(s): {report['paths'].get('pdf')}"
    return [(step, timings[step], headline.get(step, "")) for step in STEPS if step in timings]
