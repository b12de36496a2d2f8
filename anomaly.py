"""Good-only anomaly detection (homework question 4): a PatchCore-style detector learns from train/good alone,
scores and localises every test image, and is compared with a PaDiM-like Gaussian baseline on the same features.

Examples:
    python anomaly.py --demo                                  # synthetic data, random-init weights, offline
    python anomaly.py --category bottle --data-root /path/to/mvtec --weights mobilenet_v2.pth
    python anomaly.py --category all --data-root /path/to/mvtec --weights mobilenet_v2.pth
                                                              # every category, and results/anomaly_summary.json
    python anomaly.py --category screw --image-size 224 --coreset-ratio 0.01   # faster, less accurate
    python anomaly.py --load results/detectors/anomaly_bottle_mobilenet_v2.pt --images new_photos/

Writes <out>/anomaly_<category>.json, <out>/figures/anomaly_<category>.png (heat maps) and
anomaly_<category>_hist.png (scores), and the fitted detector under <out>/detectors/. Images keep their aspect
ratio: --image-size is the side of the square of the same area.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.benchmark import format_table, run_benchmark
from inspectkit.anomaly.coreset import SAMPLERS
from inspectkit.anomaly.features import DEFAULT_LAYERS, default_layers
from inspectkit.anomaly.geometry import input_shape
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.cache import DecodeCache
from inspectkit.cli import (
    add_data_args,
    add_model_args,
    add_out_arg,
    data_root_of,
    resolve_category,
    resolve_weights,
    run,
    script_parser,
    seed,
)
from inspectkit.data import Category, resolve_data_root
from inspectkit.errors import UserError
from inspectkit.imageio import read_image_folder
from inspectkit.models import check_arch, resolve_device
from inspectkit.results import ensure_writable_dir, provenance, sha256_file, write_json

ALL = "all"


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    add_data_args(parser)
    add_model_args(parser, arch_default=PatchCoreConfig.arch)
    group = parser.add_argument_group("detector")
    group.add_argument("--image-size", type=int, default=PatchCoreConfig.image_size,
                       help="side of the square of the same area as the model input (the aspect ratio is kept)")
    group.add_argument("--coreset-ratio", type=float, default=PatchCoreConfig.coreset_ratio,
                       help="share of the good patches kept in the memory bank, in (0, 1]")
    group.add_argument("--max-bank", type=int, default=PatchCoreConfig.max_bank,
                       help="most patches in the memory bank, whatever the dataset size (bounds memory and time)")
    group.add_argument("--sampler", default=PatchCoreConfig.sampler, choices=list(SAMPLERS),
                       help="coreset sampler: grouped_greedy and subsample_greedy are approximate k-center, greedy "
                            "and pruned_greedy exact, random for comparison")
    layer_defaults = "; ".join(f"{arch}: {','.join(layers)}" for arch, layers in DEFAULT_LAYERS.items())
    group.add_argument("--layers", default=None,
                       help="comma-separated backbone stages (torchvision graph node names), e.g. layer2,layer3; "
                            f"if not given, per --arch: {layer_defaults}")
    group.add_argument("--pad", type=int, default=PatchCoreConfig.pad,
                       help="pixels mirrored around each image before the backbone (a multiple of 8), so that "
                            "zero padding never decides a border patch; 0 to switch off")
    group.add_argument("--score-sigma", type=float, default=PatchCoreConfig.score_sigma,
                       help="Gaussian smoothing of the patch-score grid, in cells, before its maximum becomes the "
                            "image score")
    group.add_argument("--sigma", type=float, default=PatchCoreConfig.sigma,
                       help="Gaussian smoothing of the anomaly map, in pixels")
    group.add_argument("--batch-size", type=int, default=PatchCoreConfig.batch_size, help="images per forward pass")
    group.add_argument("--seed", type=seed, default=PatchCoreConfig.seed,
                       help="seed for the patch pool, the coreset and the random projection")
    group.add_argument("--no-baseline", action="store_true", help="skip the Gaussian (PaDiM-like) baseline")
    group.add_argument("--no-figures", action="store_true", help="skip the heat-map strip and the histogram")
    scoring = parser.add_argument_group("score new images with a saved detector")
    scoring.add_argument("--load", default=None, metavar="FILE",
                         help="a detector file written by an earlier run (under <out>/detectors/)")
    scoring.add_argument("--images", default=None, metavar="DIR",
                         help="with --load: score every image in DIR and write <out>/anomaly_scores_<DIR name>.json")
    add_out_arg(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    if args.load or args.images:
        return score_folder(args)
    config = check_args(args)
    weights = resolve_weights(args)
    device = resolve_device(args.device)
    if args.category == ALL and not args.demo:
        return benchmark(args, config, weights, device)
    started = time.perf_counter()
    # the check stores each image at the detector's input shape (pipeline.category_shape) as it decodes it
    category = resolve_category(args, prewarm=lambda sizes: input_shape(sizes, config.image_size))
    category_s = time.perf_counter() - started
    out = ensure_writable_dir(args.out)
    record, detector = run_detection(category, config, weights, device=device, baseline=not args.no_baseline,
                                     out=out, figures=not args.no_figures, category_s=category_s)
    path = write_record(out, record, detector.weights, category)
    print_summary(path, record)
    return record


def check_args(args: argparse.Namespace) -> PatchCoreConfig:
    """Validate the detector flags once, here at the boundary."""
    check_arch(args.arch)
    if args.layers is None:
        default_layers(args.arch)  # a UserError for a backbone without chosen stages
    if not 0 < args.coreset_ratio <= 1:
        raise UserError(f"--coreset-ratio must be in (0, 1], e.g. 0.02 for 2 %; got {args.coreset_ratio}")
    if args.image_size < 32:
        raise UserError(f"--image-size must be at least 32 pixels; got {args.image_size}")
    for flag, value in (("--batch-size", args.batch_size), ("--max-bank", args.max_bank)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1; got {value}")
    if args.pad < 0 or args.pad % 16:
        raise UserError(f"--pad must be 0 or a multiple of 16 (the deepest stage's stride); got {args.pad}")
    if args.sigma < 0 or args.score_sigma < 0:
        raise UserError("--sigma and --score-sigma must be >= 0")
    layers = tuple(name.strip() for name in args.layers.split(",") if name.strip()) if args.layers else ()
    return PatchCoreConfig(arch=args.arch, layers=layers, pad=args.pad, image_size=args.image_size,
                           coreset_ratio=args.coreset_ratio, max_bank=args.max_bank, sampler=args.sampler,
                           sigma=args.sigma, score_sigma=args.score_sigma, batch_size=args.batch_size, seed=args.seed)


def write_record(out: Path, record: dict, weights: dict, category: Category) -> Path:
    """Add the provenance block to a category's record and write ``<out>/anomaly_<category>.json``."""
    record["provenance"] = provenance(seed=record["config"]["seed"], weights=weights,
                                      data_root=data_root_of(category), demo=category.demo)
    return write_json(out / f"anomaly_{category.name}.json", record)


def benchmark(args: argparse.Namespace, config: PatchCoreConfig, weights: str, device) -> dict:
    """``--category all``: every category under the data root, then the summary."""
    root = resolve_data_root(args.data_root)
    if not root.is_dir():
        raise UserError(f"--category all: data root {root} is not a folder; point --data-root at the folder that "
                        "holds the category folders")
    out = ensure_writable_dir(args.out)
    summary = run_benchmark(root, config, weights, device=device, out=out, baseline=not args.no_baseline,
                            figures=not args.no_figures, write_record=lambda c, r, w: write_record(out, r, w, c))
    summary["provenance"] = provenance(seed=config.seed, weights=summary.pop("weights_info"), data_root=root)
    path = write_json(out / "anomaly_summary.json", summary)
    print(format_table(summary))
    print(f"wrote {path}")
    return summary


def score_folder(args: argparse.Namespace) -> dict:
    """``--load FILE --images DIR``: score every image in DIR with a saved detector."""
    if not (args.load and args.images):
        raise UserError("--load FILE and --images DIR go together: score the images in DIR with the detector FILE")
    detector = PatchCore.load(args.load, resolve_device(args.device))
    out = ensure_writable_dir(args.out)
    cache = DecodeCache()
    files, tensors, skipped = read_image_folder(args.images, lambda f: cache.image_tensor(f, detector.input_shape))
    for file, reason in skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    scores, _ = detector.score(torch.stack(tensors))
    threshold = detector.threshold
    rows = [{"file": p.name, "score": float(s), "anomalous": None if threshold is None else bool(s >= threshold)}
            for p, s in zip(files, scores, strict=True)]
    folder = Path(args.images)
    result = {
        "images": str(folder),
        "detector_file": str(Path(args.load)),
        "detector_sha256": sha256_file(args.load),
        "threshold": threshold,
        "threshold_note": "the F1-optimal image threshold on the test set the detector was evaluated on",
        "config": detector.config.as_dict(),
        "input_shape": list(detector.input_shape),
        "scores": rows,
        "skipped_files": [{"file": str(f), "reason": r} for f, r in skipped],
        "provenance": provenance(seed=detector.config.seed, weights=detector.weights, data_root=str(folder)),
    }
    path = write_json(out / f"anomaly_scores_{folder.resolve().name}.json", result)
    flagged = sum(bool(r["anomalous"]) for r in rows)
    print(f"scored {len(rows)} images ({flagged} above the threshold {threshold}); wrote {path}")
    return result


def print_summary(path: Path, result: dict) -> None:
    m, t = result["metrics"], result["timings"]
    pixel = f"{m['pixel_auroc']:.4f}" if m["pixel_auroc"] is not None else "n/a"
    pro = f"{m['pro']:.4f}" if m["pro"] is not None else "n/a"
    print(f"{result['category']}: image AUROC {m['image_auroc']:.4f}, pixel AUROC {pixel}, PRO {pro}, "
          f"F1 max {m['f1_max']:.3f} (input {'x'.join(map(str, result['config']['input_shape']))})")
    if result["baseline"]:
        b = result["baseline"]
        bp = f"{b['pixel_auroc']:.4f}" if b["pixel_auroc"] is not None else "n/a"
        print(f"baseline (Gaussian): image AUROC {b['image_auroc']:.4f}, pixel AUROC {bp}")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total_s")
    print(f"total {t['total_s']:.1f}s ({phases}); peak memory {result['peak_rss_mb']:.0f} MB; wrote {path}")


if __name__ == "__main__":
    run(main, get_args_parser())
