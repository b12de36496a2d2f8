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

from inspectkit import cli
from inspectkit.anomaly import PatchCore, PatchCoreConfig, options
from inspectkit.anomaly.benchmark import benchmark
from inspectkit.anomaly.gallery import find_chromium, screenshot
from inspectkit.anomaly.pipeline import run_detection, summary_text, write_record
from inspectkit.anomaly.position import border_warning
from inspectkit.anomaly.predict import score_folder, scored_text
from inspectkit.anomaly.runtime import check_runtime
from inspectkit.errors import UserError
from inspectkit.models import resolve_device
from inspectkit.names import one_line
from inspectkit.results import check_not_input, ensure_writable_dir

ALL = "all"


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.script_parser(__doc__)
    cli.add_data_args(parser)
    cli.add_model_args(parser, arch_default=PatchCoreConfig.arch)
    options.add_detector_args(parser)
    options.add_saved_detector_args(parser)
    cli.add_out_arg(parser)
    return parser


def main(args: argparse.Namespace) -> dict | Path:
    parser = get_args_parser()
    if args.export:
        if not args.load:
            raise UserError("--export needs --load FILE: the detector file to export")
        cli.refuse_unused_flags(parser, args, options.EXPORT_FLAGS,
                                "with --export (the detector file's own settings are exported)")
        return export_detector(args)
    if args.load or args.images:
        if not (args.load and args.images):
            raise UserError("--load FILE and --images DIR go together: score the images in DIR with the detector "
                            "FILE")
        cli.refuse_unused_flags(parser, args, options.SCORING_FLAGS,
                                "with --load and --images (the detector file's own settings are used)")
        return score(args, batch_size=args.batch_size if cli.flag_given(parser, args, "batch_size") else None)
    cli.refuse_unused_flags(parser, args, set(vars(args)) - set(options.SAVED_DETECTOR_FLAGS),
                            "without --load (they act on a saved detector)")
    config = options.config_from_args(args)
    if args.screenshot:
        find_chromium()  # a UserError with the install hint before any work
    weights, device = cli.resolve_weights(args), resolve_device(args.device)
    run_with = {"device": device, "runtime": check_runtime(args.runtime, device), "baseline": not args.no_baseline,
                "figures": not args.no_figures}
    if args.category == ALL and not args.demo:
        return benchmark(args.data_root, config, weights, out=args.out, command=args.command, **run_with)
    started = time.perf_counter()
    category = cli.resolve_category(args, prewarm=config.detector_shape)  # stores each image at the detector's shape
    category_s = time.perf_counter() - started
    out = ensure_writable_dir(args.out)
    record, detector = run_detection(category, config, weights, out=out, category_s=category_s, **run_with)
    path = write_record(out, record, detector.weights, category, args.command)
    if args.screenshot:
        picture = screenshot(out / f"anomaly_{category.name}.html",
                             out / "figures" / f"anomaly_{category.name}_gallery.png", fragment="sort=score-desc")
        print(f"gallery screenshot: {picture}")
    print(summary_text(record, path))
    if warning := border_warning(record.get("position")):
        print(warning, file=sys.stderr)
    return record


def score(args: argparse.Namespace, batch_size: int | None) -> dict:
    """``--load FILE --images DIR``: the verdicts, scores and boxes of every image under DIR, as CSV and JSON."""
    result, csv_path, json_path = score_folder(args.load, args.images, args.out, device=resolve_device(args.device),
                                               save_maps=args.save_maps, batch_size=batch_size, command=args.command,
                                               runtime=args.runtime)
    for item in result["skipped_files"]:
        print(f"skipped {one_line(item['file'])}: {item['reason']}", file=sys.stderr)
    print(scored_text(result, csv_path, json_path))
    return result


def export_detector(args: argparse.Namespace) -> Path:
    """``--load FILE --export onnx``: the detector as an ONNX model (map and score out, memory bank inside)."""
    from inspectkit.anomaly.onnx_export import export_onnx

    target = Path(args.export_file) if args.export_file else Path(args.load).with_suffix(".onnx")
    check_not_input(target, {args.load: "the --load detector"},
                    "--export-file" if args.export_file else "the ONNX model")
    detector = PatchCore.load(args.load, "cpu")
    path = export_onnx(detector, target)
    print(f"wrote {path}: input uint8 (N, 3, {detector.input_shape[0]}, {detector.input_shape[1]}) RGB, "
          "outputs anomaly_map and image_score")
    return path


if __name__ == "__main__":
    cli.run(main, get_args_parser())
