"""The detector against its floors, for one category: the decode floor (every image and mask file decoded once, on
all cores), the backbone floor (one onnxruntime pass over every train and test image at the detector's input shape),
and each phase of the real run (``run_detection``, default settings, figures off) with a cold cache (a new, empty
cache folder: every file decoded, the backbone's graph exported) and again warm; then ``--images`` on new images
with the saved detector. Prints each as seconds and as a ratio of the floors; writes
results/detector_speed_<category>.json.

End to end is the run's ``total_s``: checking the category, building the model, the graph, decoding, features,
coreset, scoring and metrics (the Gaussian baseline and writing the detector file are timed beside it, in
``wall_s``). Targets (issue 22; 2 cores): cold <= 3x the decode floor; warm <= 1.5x (decode floor + backbone floor);
--images on 100 new images <= 3 s after loading the detector. Timings on a busy machine mean little: the load
average before and after is recorded.

Examples:
    python -m bench.detector_speed --data-root /path/to/mvtec --category bottle --weights mobilenet_v2.pth
    python -m bench.detector_speed --data-root /path/to/mvtec --category screw --weights mobilenet_v2.pth \
        --out /tmp/speed
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.anomaly.predict import predict_folder
from inspectkit.anomaly.runtime import RUNTIMES, FeatureRuntime, check_runtime
from inspectkit.cache import CACHE_ENV, DecodeCache
from inspectkit.cli import run, script_parser
from inspectkit.data import load_category, resolve_data_root
from inspectkit.errors import UserError
from inspectkit.imageio import is_image_file, open_image
from inspectkit.models import describe_weights
from inspectkit.results import provenance, write_json

TARGETS = {"cold_over_decode_floor": 3.0, "warm_over_floors": 1.5, "predict_s": 3.0}


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding the category folder")
    parser.add_argument("--category", default="bottle", help="category folder name")
    parser.add_argument("--weights", required=True, help="backbone weights: a state_dict file, imagenet or none")
    parser.add_argument("--image-size", type=int, default=PatchCoreConfig.image_size,
                        help="the detector's --image-size (side of the square of the same area)")
    parser.add_argument("--runtime", default="auto", choices=list(RUNTIMES), help="what runs the backbone")
    parser.add_argument("--predict-images", type=int, default=100,
                        help="new images scored with the saved detector (the test images, repeated as needed)")
    parser.add_argument("--out", default="results", help="folder for detector_speed_<category>.json")
    return parser


def category_files(folder: Path) -> list[Path]:
    """Every image and mask file of the category (train, test, ground_truth)."""
    return sorted(p for split in ("train", "test", "ground_truth") for p in (folder / split).rglob("*")
                  if is_image_file(p))


def decode_floor(files: list[Path], threads: int) -> float:
    """Seconds to decode every file once (``imageio.open_image``, the toolkit's decoder) on ``threads`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(open_image, files))
    return time.perf_counter() - start


def timed_run(args: argparse.Namespace, config: PatchCoreConfig, out: Path) -> dict:
    """Check the category and run the detector on it as anomaly.py does (figures off); phases and wall seconds."""
    started = time.perf_counter()
    category = load_category(args.data_root, args.category, progress=False,
                             prewarm=config.detector_shape)
    category_s = time.perf_counter() - started
    record, _ = run_detection(category, config, args.weights, out=out, figures=False, progress=False,
                              category_s=category_s, runtime=args.runtime)
    return {"wall_s": round(time.perf_counter() - started, 3), "timings": record["timings"],
            "feature_runtime": record["feature_graph"], "input_shape": record["config"]["input_shape"],
            "metrics": {k: record["metrics"][k] for k in ("image_auroc", "pixel_auroc", "pro")},
            "detector_file": record["detector_file"], "counts": record["counts"]}


def backbone_floor(args: argparse.Namespace, config: PatchCoreConfig, shape: tuple[int, int]) -> dict:
    """Seconds of one onnxruntime pass over every train and test image at ``shape``, in the detector's batches
    (images read from the warm decode cache beforehand; the graph loaded beforehand)."""
    category = load_category(args.data_root, args.category, progress=False)
    cache = DecodeCache(memory=False)
    samples = category.split_samples("train") + category.split_samples("test")
    images = torch.from_numpy(np.stack([cache.image(s.path, shape) for s in samples])).permute(0, 3, 1, 2)
    detector = PatchCore.build(config, args.weights, runtime="onnxruntime")
    runtime: FeatureRuntime = detector.features
    runtime.prepare(shape)
    runtime(images[:config.batch_size].contiguous())  # first-call allocations, as the real run has them too
    start = time.perf_counter()
    for first in range(0, len(images), config.batch_size):
        runtime(images[first:first + config.batch_size].contiguous())
    return {"seconds": time.perf_counter() - start, "images": len(images)}


def time_predict(args: argparse.Namespace, detector_file: str, scratch: Path) -> dict:
    """``--images`` on ``--predict-images`` files (the category's test images, repeated under other names when
    there are fewer), scored with the saved detector; the load is timed apart from the scoring."""
    category = load_category(args.data_root, args.category, validate=False, progress=False)
    test = [s.path for s in category.split_samples("test")]
    folder = scratch / "new_images"
    folder.mkdir()
    for i in range(args.predict_images):
        source = test[i % len(test)]
        shutil.copyfile(source, folder / f"{i:04d}{source.suffix}")
    started = time.perf_counter()
    detector = PatchCore.load(detector_file, runtime=args.runtime)
    load_s = time.perf_counter() - started
    predictions, _, timing = predict_folder(detector, folder, progress=False)
    return {"images": len(predictions), "distinct_files": min(len(test), args.predict_images),
            "load_s": round(load_s + timing["graph_s"], 3), "score_s": timing["score_s"],
            "per_image_ms": timing["per_image_ms"], "feature_runtime": timing["feature_runtime"],
            "note": "load_s: reading the detector file and its backbone's graph; score_s: decoding and scoring"}


def ratios(run_record: dict, decode_s: float, backbone_s: float) -> dict:
    """Each phase and the end to end as a ratio of the decode floor and of both floors together."""
    timings = run_record["timings"]
    return {"end_to_end_over_decode_floor": round(timings["total_s"] / decode_s, 2),
            "end_to_end_over_floors": round(timings["total_s"] / (decode_s + backbone_s), 2),
            "phases_over_decode_floor": {k: round(v / decode_s, 3) for k, v in timings.items()
                                         if k not in ("total_s", "wall_s")},
            "features_over_backbone_floor": round(timings.get("features", 0.0) / backbone_s, 2)}


def print_report(result: dict) -> None:
    floors = result["floors"]
    print(f"{result['category']}: decode floor {floors['decode_s']:.2f} s ({floors['files']} files, "
          f"{floors['threads']} threads), backbone floor {floors['backbone_s']:.2f} s ({floors['backbone_images']} "
          f"images, onnxruntime)")
    for name in ("cold", "warm"):
        entry = result[name]
        timings = entry["timings"]
        phases = ", ".join(f"{k} {v:.2f}" for k, v in timings.items() if k not in ("total_s", "wall_s"))
        print(f"  {name}: end to end {timings['total_s']:.2f} s = {entry['ratios']['end_to_end_over_decode_floor']}x "
              f"decode floor, {entry['ratios']['end_to_end_over_floors']}x both floors; wall with baseline and "
              f"detector file {timings['wall_s']:.2f} s; features {entry['feature_runtime']}")
        print(f"    phases (s): {phases}")
    predict = result["predict"]
    print(f"  --images: {predict['images']} images scored in {predict['score_s']:.2f} s after loading the detector "
          f"({predict['load_s']:.2f} s)")
    checks = result["targets"]
    print("  targets: " + "; ".join(f"{k} {v['value']} <= {v['limit']}: {'met' if v['met'] else 'NOT met'}"
                                    for k, v in checks.items()))
    print(f"  load average before {result['load_before']}, after {result['load_after']}")


def main(args: argparse.Namespace) -> dict:
    root = resolve_data_root(args.data_root)
    folder = root / args.category
    if not folder.is_dir():
        raise UserError(f"no category folder {folder}; pass --data-root and --category of an MVTec-layout category")
    if args.predict_images < 1:
        raise UserError(f"--predict-images must be at least 1; got {args.predict_images}")
    check_runtime(args.runtime)
    if args.weights not in ("imagenet", "none") and not Path(args.weights).expanduser().is_file():
        raise UserError(f"weights file {args.weights} not found; pass --weights PATH to a state_dict file")
    config = PatchCoreConfig(image_size=args.image_size)
    files = category_files(folder)
    threads = os.cpu_count() or 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    previous_cache = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="detector_speed_") as scratch:
        scratch = Path(scratch)
        os.environ[CACHE_ENV] = str(scratch / "cache")  # cold: nothing decoded, no graph exported yet
        try:
            decode_s = decode_floor(files, threads)
            cold = timed_run(args, config, scratch / "out")
            warm = timed_run(args, config, scratch / "out")
            backbone = backbone_floor(args, config, tuple(warm["input_shape"]))
            predict = time_predict(args, warm["detector_file"], scratch)
        finally:
            if previous_cache is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = previous_cache
    backbone_s = backbone["seconds"]
    for entry in (cold, warm):
        entry["ratios"] = ratios(entry, decode_s, backbone_s)
        entry.pop("detector_file")
    targets = {
        "cold_over_decode_floor": cold["ratios"]["end_to_end_over_decode_floor"],
        "warm_over_floors": warm["ratios"]["end_to_end_over_floors"],
        "predict_s": predict["score_s"] if predict["images"] == 100 else None,
    }
    result = {
        "category": args.category,
        "floors": {"decode_s": round(decode_s, 3), "files": len(files), "threads": threads,
                   "backbone_s": round(backbone_s, 3), "backbone_images": backbone["images"],
                   "note": "decode: every image and mask file decoded once with the toolkit's decoder on all cores; "
                           "backbone: one onnxruntime pass over every train and test image at the input shape, "
                           "in the detector's batches, images already decoded"},
        "cold": cold, "warm": warm, "predict": predict,
        "targets": {k: {"value": v, "limit": TARGETS[k], "met": v is not None and v <= TARGETS[k]}
                    for k, v in targets.items()},
        "config": {**config.as_dict(), "runtime": args.runtime, "torch_threads": torch.get_num_threads()},
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "note": "end to end is the run's total_s (category check, model, graph, decode, features, coreset, scoring, "
                "metrics); wall_s adds the Gaussian baseline and writing the detector file. Cold: a new, empty cache "
                "folder (every file decoded once by the category check, the feature graph exported); warm: the "
                "same folder again. --images: the test images copied to new names (each file is decoded, nothing "
                "is cached), scored after the detector was loaded",
    }
    result["provenance"] = provenance(seed=config.seed, data_root=root, weights=describe_weights(args.weights))
    path = write_json(Path(args.out) / f"detector_speed_{args.category}.json", result)
    print_report(result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
