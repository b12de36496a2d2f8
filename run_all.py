"""Run the whole pipeline in one process: stats, train (all attempts), evaluate, anomaly, export, report.

Examples:
    python run_all.py --demo                                  # synthetic data, random-init weights, < 5 min on 2 cores
    python run_all.py --demo --out /tmp/demo --weights imagenet
    python run_all.py --category bottle --data-root /path/to/mvtec --arch mobilenet_v2 \\
        --weights mobilenet_v2.pth                            # offline: a state_dict file (see the README)
    python run_all.py --category bottle --data-root /path/to/mvtec --only report    # re-render the PDF only

Each step calls a script's own ``main`` with a Namespace from that script's own parser, so the scripts' defaults
stay the single source; this file only chooses the shared flags and, for --demo, short settings.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from inspectkit.attempts import best_attempt
from inspectkit.cli import (
    DEMO_WEIGHTS,
    add_data_args,
    add_device_arg,
    add_out_arg,
    check_demo_flags,
    refuse_unused_flags,
    run,
    script_parser,
)
from inspectkit.errors import UserError
from inspectkit.report import collect_inputs
from inspectkit.results import ensure_writable_dir
from inspectkit.synthetic import DEMO_CATEGORY

# step name -> root script (module) it runs, in pipeline order
STEPS = {"stats": "stats", "train": "train", "evaluate": "evaluate", "anomaly": "anomaly",
         "export": "export_labels", "report": "build_report"}

# Short settings for --demo: small, procedural data; the point is a complete PDF in minutes, not good numbers.
DEMO_ARCH = "resnet18"
DEMO_FLAGS = {
    "train": ["--epochs", "30", "--splits", "2", "--image-size", "96"],
    "anomaly": ["--image-size", "128", "--coreset-ratio", "0.1"],
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    add_data_args(parser)
    parser.add_argument("--arch", default=None,
                        help=f"TorchVision backbone for train and anomaly; if not given, each script's own, "
                             f"{DEMO_ARCH} with --demo")
    parser.add_argument("--weights", default=None,
                        help="imagenet, none or PATH, for train and anomaly; if not given, each script's own, "
                             f"{DEMO_WEIGHTS} with --demo, which needs no internet")
    add_device_arg(parser)
    add_out_arg(parser)
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=None,
                        help="run only these steps; if not given, all, in order")
    parser.add_argument("--name", default="", help="author's name for the report header")
    parser.add_argument("--student-id", default="", help="student id for the report header")
    return parser


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


def parse_step(step: str, argv: list[str]) -> tuple[object, argparse.Namespace]:
    """Import a step's script and parse ``argv`` with its own parser; a flag it lacks is a clear error."""
    module = importlib.import_module(STEPS[step])
    parser = module.get_args_parser()
    try:
        return module, parser.parse_args(argv)
    except SystemExit:
        raise UserError(f"{STEPS[step]}.py does not accept the flags run_all.py passes it: {' '.join(argv)}") from None


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


# The flags only some steps read: refused when --only leaves out every one of those steps.
STEP_FLAGS = {"arch": ("train", "anomaly"), "weights": ("train", "anomaly"), "device": ("train", "evaluate", "anomaly"),
              "name": ("report",), "student_id": ("report",)}


def main(args: argparse.Namespace) -> dict:
    check_demo_flags(args)  # as each script does: --demo with --data-root or --category is refused, not ignored
    steps = args.only or list(STEPS)
    idle = {dest for dest, readers in STEP_FLAGS.items() if not set(readers) & set(steps)}
    refuse_unused_flags(get_args_parser(), args, set(vars(args)) - idle, f"with --only {' '.join(steps)}")
    out = ensure_writable_dir(args.out)
    timings: dict[str, float] = {}
    report = None
    start = time.perf_counter()
    for index, step in enumerate(s for s in STEPS if s in steps):
        argv = step_argv(step, args)
        module, step_args = parse_step(step, argv)
        print(f"\n== [{index + 1}/{len(steps)}] python {STEPS[step]}.py {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        saved_argv = sys.argv
        sys.argv = [f"{STEPS[step]}.py", *argv]  # so each result's provenance records the step's own command
        try:
            result = module.main(step_args)
        except UserError as exc:  # keep its type, so its exit code (2, or 1 for the page budget) survives
            exc.args = (f"step {step} failed: {exc}",)
            raise
        finally:
            sys.argv = saved_argv
        timings[step] = time.perf_counter() - t0
        if step == "report":
            report = result
    total = time.perf_counter() - start

    rows = summary_rows(out, DEMO_CATEGORY if args.demo else args.category, timings, report)
    print(f"\n{'step':<9} {'seconds':>8}  result")
    for step, seconds, headline in rows:
        print(f"{step:<9} {seconds:8.1f}  {headline}")
    print(f"{'total':<9} {total:8.1f}")
    if report and "pdf" in report["paths"]:
        print(f"\nreport: {report['paths']['pdf']}")
    return {"timings": timings, "total_s": total, "report": report}


if __name__ == "__main__":
    run(main, get_args_parser())
