"""Speed of ``anomaly.py --load FILE --images DIR`` after the model is loaded: a detector fitted at --image-size on
a category's train/good, then N images (the category's test images, repeated under new names if there are fewer)
scored through the library call the script makes (predict_folder). Target: 100 images at 224 px in <= 10 s.

Writes results/anomaly_predict_bench.json.

Examples:
    python -m bench.anomaly_predict --data-root /path/to/mvtec --category bottle --weights mobilenet_v2.pth
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from inspectkit.cli import run, script_parser


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding the category folders")
    parser.add_argument("--category", default="bottle", help="category to fit on and take images from")
    parser.add_argument("--weights", required=True, help="backbone weights: a state_dict file, imagenet or none")
    parser.add_argument("--image-size", type=int, default=224, help="detector input size")
    parser.add_argument("--images", type=int, default=100, help="how many images to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--out", default="results", help="folder for anomaly_predict_bench.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    import statistics

    import torch

    from inspectkit.anomaly import PatchCore, PatchCoreConfig
    from inspectkit.anomaly.pipeline import run_detection
    from inspectkit.anomaly.predict import predict_folder
    from inspectkit.data import load_category
    from inspectkit.results import provenance, write_json

    category = load_category(args.data_root, args.category, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        _, fitted = run_detection(category, PatchCoreConfig(image_size=args.image_size), args.weights,
                                  baseline=False, figures=False, progress=False, out=Path(tmp))
        detector_file = Path(tmp) / "detectors" / f"anomaly_{args.category}_{fitted.config.arch}.pt"
        folder = Path(tmp) / "new_images"
        folder.mkdir()
        test = [s.path for s in category.split_samples("test")]
        for i in range(args.images):
            source = test[i % len(test)]
            shutil.copy(source, folder / f"{i:04d}{source.suffix}")
        start = time.perf_counter()
        detector = PatchCore.load(detector_file)
        load_s = time.perf_counter() - start
        predict_folder(detector, folder, progress=False)  # warm-up: first-call allocations, page cache
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictions, _, _ = predict_folder(detector, folder, progress=False)
            runs.append(time.perf_counter() - start)
    result = {"category": args.category, "images": len(predictions), "input_shape": list(detector.input_shape),
              "seconds": {"median": round(statistics.median(runs), 3), "runs": [round(r, 3) for r in runs]},
              "load_s": round(load_s, 3), "target_s": 10.0, "threads": torch.get_num_threads(),
              "note": "decode (PNG files, on all cores), features, nearest-neighbour scores, maps, boxes; after "
                      "loading the detector; the files are the category's test images under new names",
              "provenance": provenance(seed=0, weights=detector.weights, data_root=str(args.data_root))}
    path = write_json(Path(args.out) / "anomaly_predict_bench.json", result)
    print(f"{len(predictions)} images in {result['seconds']['median']:.2f} s (median of {args.repeats}); wrote {path}")
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
