"""Run the whole pipeline in one process: stats, train (all attempts), evaluate, anomaly, export, report.

Examples:
    python run_all.py --demo                                  # synthetic data, random-init weights, < 5 min on 2 cores
    python run_all.py --demo --out /tmp/demo --weights imagenet
    python run_all.py --category bottle --data-root /path/to/mvtec --arch mobilenet_v2 \\
        --weights mobilenet_v2.pth                            # offline: a state_dict file (see the README)
    python run_all.py --category bottle --data-root /path/to/mvtec --only report    # re-render the PDF only

Each step calls a script's own ``main`` with a Namespace from that script's own parser, so the scripts' defaults
stay the single source; inspectkit/steps.py only chooses the shared flags and, for --demo, short settings.
"""

from __future__ import annotations

import argparse
import importlib
import time

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
from inspectkit.results import ensure_writable_dir
from inspectkit.steps import DEMO_ARCH, STEP_FLAGS, STEPS, step_argv, summary_rows
from inspectkit.synthetic import DEMO_CATEGORY


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


def parse_step(step: str, argv: list[str]) -> tuple[object, argparse.Namespace]:
    """Import a step's script and parse ``argv`` with its own parser; a flag it lacks is a clear error."""
    module = importlib.import_module(STEPS[step])
    parser = module.get_args_parser()
    try:
        return module, parser.parse_args(argv)
    except SystemExit:
        raise UserError(f"{STEPS[step]}.py does not accept the flags run_all.py passes it: {' '.join(argv)}") from None


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
        step_args.command = [f"{STEPS[step]}.py", *argv]  # what its results record as the command that made them
        try:
            result = module.main(step_args)
        except UserError as exc:  # keep its type, so its exit code (2, or 1 for the page budget) survives
            exc.args = (f"step {step} failed: {exc}",)
            raise
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
