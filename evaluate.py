"""Re-score the trained attempts from their checkpoints, compare them, and draw the best one's figures;
or predict the defect type of every image in a folder.

Examples:
    python evaluate.py --demo                                     # after: python train.py --attempt all --demo
    python evaluate.py                                            # hazelnut under ./data or $MVTEC_ROOT
    python evaluate.py --category bottle --data-root /path/to/mvtec
    python evaluate.py --attempt 3 --images path/to/folder --csv predictions.csv

Writes <out>/evaluation.json and <out>/figures/classification_*.png.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from inspectkit.attempts import select_attempts
from inspectkit.checkpoints import checkpoint_path
from inspectkit.cli import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    data_root_of,
    non_negative_int,
    refuse_unused_flags,
    resolve_category,
    run,
    script_parser,
)
from inspectkit.errors import UserError
from inspectkit.evaluation import evaluate_attempts, predict_folder, trained_results
from inspectkit.imageio import list_image_files
from inspectkit.models import resolve_device
from inspectkit.names import one_line
from inspectkit.results import check_output_file, ensure_writable_dir, provenance, write_csv, write_json

CLASSIFY_FLAGS = ("attempt", "images", "split", "csv", "device", "out", "demo")  # --demo: its results folder
EVALUATE_FLAGS = ("attempt", "category", "data_root", "demo", "device", "out")


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--attempt", default="all",
                        help="attempt to evaluate (1-4) or all; with --images, the one to use")
    add_data_args(parser)
    add_device_arg(parser)
    parser.add_argument("--images", default=None,
                        help="folder of images to classify with --attempt's checkpoint instead of evaluating")
    parser.add_argument("--split", type=non_negative_int, default=0,
                        help="with --images: which split's checkpoint to use")
    parser.add_argument("--csv", default=None, help="with --images: also write the predictions to this CSV file")
    add_out_arg(parser)
    return parser


def classify_images(args: argparse.Namespace) -> None:
    attempts = select_attempts(args.attempt)
    if len(attempts) != 1:
        raise UserError("--images needs one attempt: pass --attempt 1, 2, 3 or 4")
    if args.csv:
        check_output_file(args.csv, "--csv", files_read(args, attempts[0].number))
    rows, skipped = predict_folder(Path(args.out), attempts[0].number, args.split, args.images,
                                   resolve_device(args.device))
    for file, reason in skipped:
        print(f"skipped {one_line(str(file))}: {reason}", file=sys.stderr)
    for row in rows:  # one line per image whatever its name holds (a tab or newline would forge a column or row)
        print(f"{one_line(row['file'])}\t{one_line(row['class'])}\t{row['probability']:.4f}")
    if args.csv:
        write_csv(args.csv, rows, ["file", "class", "probability"])


def files_read(args: argparse.Namespace, attempt: int) -> dict[Path, str]:
    """The files ``--images`` mode reads, each with what it is: the checkpoint folder's files (the checkpoint and
    an anomaly gate's detector) and the images; ``--csv`` must replace none of them."""
    reads: dict[Path, str] = {}
    checkpoints = checkpoint_path(Path(args.out), attempt, args.split).parent
    with contextlib.suppress(OSError):  # a missing folder is reported, with its remedy, when it is read
        reads.update({path: "a checkpoint file" for path in checkpoints.iterdir()})
    with contextlib.suppress(OSError):
        reads.update({path: "an image in --images" for path in list_image_files(Path(args.images))[0]})
    return reads


def main(args: argparse.Namespace) -> None:
    parser = get_args_parser()
    if args.images is not None:
        refuse_unused_flags(parser, args, CLASSIFY_FLAGS, "with --images (the checkpoint's own class names are "
                                                          "used)")
        classify_images(args)
        return
    refuse_unused_flags(parser, args, EVALUATE_FLAGS, "without --images")
    out = Path(args.out)
    results = trained_results(out, args.attempt)
    category = resolve_category(args)
    ensure_writable_dir(out)
    evaluation = evaluate_attempts(results, category, out, resolve_device(args.device))
    best = next(r for r in results if r["attempt"] == evaluation["best_attempt"])
    path = write_json(out / "evaluation.json", {**evaluation, "provenance": provenance(
        seed=best["provenance"]["seed"], weights=best["config"]["weights"], data_root=data_root_of(category),
        demo=category.demo, command=args.command)})
    for row in evaluation["table"]:
        print(f"attempt {row['attempt']} ({row['name']}): macro-F1 {row['macro_f1']['mean']:.3f} ± "
              f"{row['macro_f1']['std']:.3f}, accuracy {row['accuracy']['mean']:.3f}")
    print(f"best: attempt {evaluation['best_attempt']}; reproduced from checkpoints: "
          f"{all(r['equal'] for r in evaluation['reproduction'])} in {evaluation['timing']['wall_s']:.0f} s "
          f"-> {path}")


if __name__ == "__main__":
    run(main, get_args_parser())
