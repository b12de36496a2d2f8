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
import csv
import io
import sys
from pathlib import Path

import torch

from inspectkit.attempts import select_attempts
from inspectkit.cache import DecodeCache
from inspectkit.cli import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    data_root_of,
    non_negative_int,
    resolve_category,
    run,
    script_parser,
)
from inspectkit.errors import UserError
from inspectkit.figures.training import confusion_matrix_figure, learning_curves_figure, misclassified_gallery
from inspectkit.imageio import read_image_folder
from inspectkit.metrics import SUMMARY_METRICS, paired_differences, summarize_splits
from inspectkit.models import resolve_device
from inspectkit.results import atomic_write, check_output_file, ensure_writable_dir, provenance, write_json
from inspectkit.training import (
    checkpoint_path,
    classifier_from_checkpoint,
    load_checkpoint,
    predict,
    read_attempt_result,
    rescore_attempt,
    retrain_command,
)

GALLERY_SIZE = 160
GALLERY_MAX = 24


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


def _trained_results(out: Path, attempt_choice: str) -> list[dict]:
    numbers = [a.number for a in select_attempts(attempt_choice)]
    found = [read_attempt_result(out / f"attempt_{n}.json", out) for n in numbers
             if (out / f"attempt_{n}.json").is_file()]
    if not found:
        raise UserError(f"no trained attempts in {out} (no attempt_N.json); run first: python train.py "
                        f"--attempt {attempt_choice} --out {out} (with your data flags)")
    return found


def predict_folder(args: argparse.Namespace) -> None:
    attempts = select_attempts(args.attempt)
    if len(attempts) != 1:
        raise UserError("--images needs one attempt: pass --attempt 1, 2, 3 or 4")
    if args.csv:
        check_output_file(args.csv, "--csv")
    path = checkpoint_path(Path(args.out), attempts[0].number, args.split)
    if not path.is_file():
        raise UserError(f"no checkpoint {path}; run first: {retrain_command(Path(args.out), attempts[0].number)}")
    checkpoint = load_checkpoint(path, retrain_command(Path(args.out), attempts[0].number))
    device = resolve_device(args.device)
    model = classifier_from_checkpoint(checkpoint).to(device)
    cache = DecodeCache()
    size = checkpoint["config"]["image_size"]
    files, tensors, skipped = read_image_folder(args.images, lambda f: cache.image_tensor(f, size))
    for file, reason in skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    images = torch.stack(tensors)
    probs = predict(model, images, device, checkpoint["config"].get("test_time_views", 1))
    names = checkpoint["class_names"]
    rows = [{"file": str(f), "class": names[int(p.argmax())], "probability": round(float(p.max()), 4)}
            for f, p in zip(files, probs, strict=True)]
    for row in rows:
        print(f"{row['file']}\t{row['class']}\t{row['probability']:.4f}")
    if args.csv:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=["file", "class", "probability"])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(args.csv, text.getvalue())


def compare(results: list[dict]) -> dict:
    """The comparison table, the best attempt by mean test macro-F1, and paired differences between attempts."""
    table = [{"attempt": r["attempt"], "name": r["config"]["name"], "what_changed": r["config"]["what_changed"],
              **{m: {k: r["test"][m][k] for k in ("mean", "std")} for m in SUMMARY_METRICS},
              "per_class_recall": {c: {k: v[k] for k in ("mean", "std")}
                                   for c, v in r["test"]["per_class_recall"].items()},
              "wall_s": r["timing"]["wall_s"], "epochs": r["config"]["epochs"],
              "image_size": r["config"]["image_size"]} for r in results]
    best = max(results, key=lambda r: (r["test"]["macro_f1"]["mean"], -r["test"]["macro_f1"]["std"]))
    differences = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            differences.append({"a": a["attempt"], "b": b["attempt"], **{
                m: paired_differences(a["test"][m]["values"], b["test"][m]["values"]) for m in SUMMARY_METRICS}})
    return {"table": table,
            "best_attempt": best["attempt"],
            "best": {"attempt": best["attempt"], "name": best["config"]["name"],
                     "macro_f1": {k: best["test"]["macro_f1"][k] for k in ("mean", "std")},
                     "rule": "highest mean test macro-F1 over splits (ties: lower std)"},
            "differences": differences,
            "differences_note": "b minus a per split on the same splits; mean and sample std of the differences"}


def main(args: argparse.Namespace) -> None:
    if args.images is not None:
        predict_folder(args)
        return
    out = Path(args.out)
    results = _trained_results(out, args.attempt)
    category = resolve_category(args)
    if category.name != results[0]["category"]:
        raise UserError(f"the attempts in {out} were trained on '{results[0]['category']}', not "
                        f"'{category.name}'; pass --category {results[0]['category']}")
    ensure_writable_dir(out)
    device = resolve_device(args.device)
    cache = DecodeCache()

    reproduction, rescored_by_attempt = [], {}
    for result in results:
        rescored = rescore_attempt(result, category, out, device, cache)
        rescored_by_attempt[result["attempt"]] = rescored
        summary = summarize_splits([s["metrics"] for s in rescored], result["class_names"])
        gaps = {m: max(abs(a - b) for a, b in zip(summary[m]["values"], result["test"][m]["values"], strict=True))
                for m in SUMMARY_METRICS}
        reproduction.append({"attempt": result["attempt"], "max_abs_difference": gaps,
                             "equal": all(g <= 1e-9 for g in gaps.values()),
                             "macro_f1": {k: summary["macro_f1"][k] for k in ("mean", "std")}})

    comparison = compare(results)
    best = next(r for r in results if r["attempt"] == comparison["best"]["attempt"])
    figures = draw_figures(best, rescored_by_attempt[best["attempt"]], category, cache, out / "figures")
    evaluation = {"category": category.name, "class_names": category.class_names, **comparison,
                  "reproduction": reproduction, "figures": [p.relative_to(out).as_posix() for p in figures],
                  "provenance": provenance(seed=best["provenance"]["seed"], weights=best["config"]["weights"],
                                           data_root=data_root_of(category), demo=category.demo)}
    path = write_json(out / "evaluation.json", evaluation)
    for row in comparison["table"]:
        print(f"attempt {row['attempt']} ({row['name']}): macro-F1 {row['macro_f1']['mean']:.3f} ± "
              f"{row['macro_f1']['std']:.3f}, accuracy {row['accuracy']['mean']:.3f}")
    print(f"best: attempt {comparison['best']['attempt']}; reproduced from checkpoints: "
          f"{all(r['equal'] for r in reproduction)} -> {path}")


def draw_figures(best: dict, rescored: list[dict], category, cache: DecodeCache, folder: Path) -> list[Path]:
    name = f"attempt {best['attempt']} ({best['config']['name']})"
    matrix = summarize_splits([s["metrics"] for s in rescored], best["class_names"])["confusion_matrix_sum"]
    paths = [confusion_matrix_figure(matrix, best["class_names"],
                                     f"{category.name}, {name}: test confusion matrix, {len(rescored)} splits summed",
                                     folder / "classification_confusion_matrix.png"),
             learning_curves_figure(best["splits"], f"{category.name}, {name}: learning curves",
                                    folder / "classification_learning_curves.png")]
    images, captions = [], []
    for k, split in enumerate(rescored):
        for file, t, p, prob in zip(split["files"], split["y_true"], split["y_pred"], split["prob"], strict=True):
            if t != p and len(images) < GALLERY_MAX:
                images.append(cache.image(category.root / file, GALLERY_SIZE))
                captions.append(f"split {k}: {Path(file).name}\ntrue {best['class_names'][t]}\n"
                                f"pred {best['class_names'][p]} ({prob:.2f})")
    paths.append(misclassified_gallery(images, captions, f"{category.name}, {name}: misclassified test images "
                                                         f"(all splits)", folder / "classification_misclassified.png"))
    return paths


if __name__ == "__main__":
    run(main, get_args_parser())
