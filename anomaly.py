"""Good-only anomaly detection (homework question 4): a PatchCore-style detector learns from train/good alone,
scores and localises every test image, and is compared with a PaDiM-like Gaussian baseline on the same features.

Examples:
    python anomaly.py --demo                                  # synthetic data, random-init weights, offline
    python anomaly.py --category bottle --data-root /path/to/mvtec --weights mobilenet_v2.pth
    python anomaly.py --category all --data-root /path/to/mvtec --weights mobilenet_v2.pth
                                                              # every category, and results/anomaly_summary.json
    python anomaly.py --category screw --image-size 224 --coreset-ratio 0.01   # faster, less accurate
    python anomaly.py --load results/detectors/anomaly_bottle_mobilenet_v2.pt --images new_photos/ --save-maps
                                                              # verdicts, scores and boxes: predictions_new_photos.csv
    python anomaly.py --load results/detectors/anomaly_bottle_mobilenet_v2.pt --export onnx

Writes <out>/anomaly_<category>.json, <out>/figures/anomaly_<category>.png (heat maps) and
anomaly_<category>_hist.png (scores), and the fitted detector under <out>/detectors/. Images keep their aspect
ratio: --image-size is the side of the square of the same area.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.benchmark import format_table, run_benchmark
from inspectkit.anomaly.coreset import SAMPLERS
from inspectkit.anomaly.features import DEFAULT_LAYERS, default_layers
from inspectkit.anomaly.gallery import find_chromium, screenshot
from inspectkit.anomaly.geometry import input_shape
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.anomaly.position import MODES as POSITION_MODES
from inspectkit.anomaly.position import border_warning
from inspectkit.anomaly.predict import as_records, find_images, predict_folder, predictions_csv
from inspectkit.anomaly.runtime import RUNTIMES, check_runtime
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
from inspectkit.models import check_arch, resolve_device
from inspectkit.results import atomic_write, ensure_writable_dir, provenance, sha256_file, write_json

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
    group.add_argument("--position-norm", default=PatchCoreConfig.position_norm, choices=list(POSITION_MODES),
                       help="cell: score each patch against how the held-out good images score at that position "
                            "(edges that vary from image to image stop deciding the image score); none: plain "
                            "nearest-neighbour distance, the scoring before")
    group.add_argument("--scale-power", type=float, default=PatchCoreConfig.scale_power,
                       help="with --position-norm cell: how far each position's own spread divides its score, "
                            "0 (none: location only) to 1 (full standardisation)")
    group.add_argument("--sigma", type=float, default=PatchCoreConfig.sigma,
                       help="Gaussian smoothing of the anomaly map, in pixels")
    group.add_argument("--batch-size", type=int, default=PatchCoreConfig.batch_size, help="images per forward pass")
    group.add_argument("--runtime", default="auto", choices=list(RUNTIMES),
                       help="what runs the backbone on a CPU: onnxruntime (its graph exported once per backbone, "
                            "weights and input shape, and cached beside the decode cache), torch, or auto "
                            "(onnxruntime when it is installed)")
    group.add_argument("--seed", type=seed, default=PatchCoreConfig.seed,
                       help="seed for the patch pool, the coreset and the random projection")
    group.add_argument("--validation-share", type=float, default=PatchCoreConfig.validation_share,
                       help="share of train/good held out of the memory bank (seeded) to set the thresholds from "
                            "good images only, in (0, 1)")
    group.add_argument("--false-alarm", type=float, default=PatchCoreConfig.false_alarm,
                       help="target false-alarm rate on the held-out good images, in (0, 1): 0.01 flags about 1 in "
                            "100 good images (and pixels) as defective")
    group.add_argument("--no-baseline", action="store_true", help="skip the Gaussian (PaDiM-like) baseline")
    group.add_argument("--no-figures", action="store_true",
                       help="skip the heat-map strip, the histogram and the HTML gallery")
    group.add_argument("--screenshot", action="store_true",
                       help="also save a picture of the gallery's top (sorted by score) as "
                            "<out>/figures/anomaly_<category>_gallery.png; needs chromium (apt-get install chromium)")
    scoring = parser.add_argument_group("score new images with a saved detector")
    scoring.add_argument("--load", default=None, metavar="FILE",
                         help="a detector file written by an earlier run (under <out>/detectors/)")
    scoring.add_argument("--images", default=None, metavar="DIR",
                         help="with --load: score every image under DIR (recursively) and write "
                              "<out>/predictions_<DIR name>.csv and .json")
    scoring.add_argument("--save-maps", action="store_true",
                         help="with --images: also write an overlay PNG per image to <out>/predictions_<DIR name>/")
    scoring.add_argument("--export", choices=["onnx"], default=None,
                         help="with --load: write the detector as an ONNX model (uint8 RGB in; map and score out)")
    scoring.add_argument("--export-file", default=None, metavar="PATH",
                         help="with --export: where to write it (default: next to the --load file, .onnx)")
    add_out_arg(parser)
    return parser


def main(args: argparse.Namespace) -> dict | Path:
    if args.export:
        if not args.load:
            raise UserError("--export needs --load FILE: the detector file to export")
        return export_detector(args)
    if args.load or args.images:
        return score_folder(args)
    config = check_args(args)
    if args.screenshot:
        find_chromium()  # a UserError with the install hint before any work
    weights = resolve_weights(args)
    device = resolve_device(args.device)
    check_runtime(args.runtime, device)
    if args.category == ALL and not args.demo:
        return benchmark(args, config, weights, device)
    started = time.perf_counter()
    # the check stores each image at the detector's input shape (pipeline.category_shape) as it decodes it
    category = resolve_category(args, prewarm=lambda sizes: input_shape(sizes, config.image_size))
    category_s = time.perf_counter() - started
    out = ensure_writable_dir(args.out)
    record, detector = run_detection(category, config, weights, device=device, baseline=not args.no_baseline,
                                     out=out, figures=not args.no_figures, category_s=category_s,
                                     runtime=args.runtime)
    path = write_record(out, record, detector.weights, category)
    if args.screenshot and not args.no_figures:
        picture = screenshot(out / f"anomaly_{category.name}.html",
                             out / "figures" / f"anomaly_{category.name}_gallery.png", fragment="sort=score-desc")
        print(f"gallery screenshot: {picture}")
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
    for flag, value in (("--false-alarm", args.false_alarm), ("--validation-share", args.validation_share)):
        if not 0 < value < 1:
            raise UserError(f"{flag} must be in (0, 1), e.g. 0.01 for 1 %; got {value}")
    if args.sigma < 0 or args.score_sigma < 0:
        raise UserError("--sigma and --score-sigma must be >= 0")
    if not 0 <= args.scale_power <= 1:
        raise UserError(f"--scale-power must be in [0, 1] (0: location only, 1: full standardisation); got "
                        f"{args.scale_power}")
    layers = tuple(name.strip() for name in args.layers.split(",") if name.strip()) if args.layers else ()
    return PatchCoreConfig(arch=args.arch, layers=layers, pad=args.pad, image_size=args.image_size,
                           coreset_ratio=args.coreset_ratio, max_bank=args.max_bank, sampler=args.sampler,
                           sigma=args.sigma, score_sigma=args.score_sigma, batch_size=args.batch_size, seed=args.seed,
                           validation_share=args.validation_share, false_alarm=args.false_alarm,
                           position_norm=args.position_norm, scale_power=args.scale_power)


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
                            figures=not args.no_figures, write_record=lambda c, r, w: write_record(out, r, w, c),
                            runtime=args.runtime)
    summary["provenance"] = provenance(seed=config.seed, weights=summary.pop("weights_info"), data_root=root)
    path = write_json(out / "anomaly_summary.json", summary)
    print(format_table(summary))
    print(f"wrote {path}")
    return summary


def score_folder(args: argparse.Namespace) -> dict:
    """``--load FILE --images DIR``: score every image under DIR with a saved detector; CSV and JSON of verdicts."""
    if not (args.load and args.images):
        raise UserError("--load FILE and --images DIR go together: score the images in DIR with the detector FILE")
    folder = Path(args.images)
    device = resolve_device(args.device)
    detector = PatchCore.load(args.load, device, check_runtime(args.runtime, device))
    find_images(folder)  # a file, a missing or an empty folder fails here, before anything is written
    out = ensure_writable_dir(args.out)
    name = folder.resolve().name or "images"
    maps_dir = out / f"predictions_{name}" if args.save_maps else None
    predictions, skipped, timing = predict_folder(detector, folder, maps_dir=maps_dir)
    for item in skipped:
        print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    result = {
        "images": str(folder),
        "detector_file": str(Path(args.load)),
        "detector_sha256": sha256_file(args.load),
        "image_threshold": detector.image_threshold,
        "pixel_threshold": detector.pixel_threshold,
        "threshold_note": f"set at a {detector.config.false_alarm:.1%} false-alarm rate on "
                          f"{detector.threshold_info.get('validation_images')} good validation images held out of "
                          "train/good (no defect labels); normalized_score is 0.5 at the threshold, 0 for a typical "
                          "good image; bbox is the largest region at or above the pixel threshold, in the file's "
                          "pixels (x1, y1 exclusive)",
        "config": detector.config.as_dict(),
        "input_shape": list(detector.input_shape),
        "counts": {"scored": len(predictions), "defect": sum(p.verdict == "defect" for p in predictions),
                   "skipped": len(skipped)},
        "timing": timing,
        "predictions": as_records(predictions),
        "skipped_files": skipped,
        "maps": str(maps_dir) if maps_dir else None,
        "provenance": provenance(seed=detector.config.seed, weights=detector.weights, data_root=str(folder)),
    }
    csv_path = atomic_write(out / f"predictions_{name}.csv", predictions_csv(predictions))
    path = write_json(out / f"predictions_{name}.json", result)
    print(f"scored {len(predictions)} images in {timing['score_s']:.1f} s: {result['counts']['defect']} defect, "
          f"{len(predictions) - result['counts']['defect']} good (threshold {detector.image_threshold:.4g}), "
          f"{len(skipped)} skipped; wrote {csv_path} and {path}" + (f"; overlays in {maps_dir}" if maps_dir else ""))
    return result


def export_detector(args: argparse.Namespace) -> Path:
    """``--load FILE --export onnx``: the detector as an ONNX model (map and score out, memory bank inside)."""
    from inspectkit.anomaly.onnx_export import export_onnx

    detector = PatchCore.load(args.load, "cpu")
    target = Path(args.export_file) if args.export_file else Path(args.load).with_suffix(".onnx")
    path = export_onnx(detector, target)
    print(f"wrote {path}: input uint8 (N, 3, {detector.input_shape[0]}, {detector.input_shape[1]}) RGB, "
          "outputs anomaly_map and image_score")
    return path


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
    warning = border_warning(result.get("position"))
    if warning:
        print(warning, file=sys.stderr)


if __name__ == "__main__":
    run(main, get_args_parser())
