"""Our detector beside anomalib's PatchCore, per category, on the same weights and the same decoded images: image
and pixel AUROC (our metrics functions for both) and end-to-end seconds; writes results/anomaly_bench.json.

Ours is ``inspectkit.anomaly.pipeline.run_detection`` with the default ``PatchCoreConfig``. anomalib (a scratch
virtualenv, never a dependency) runs bench/anomalib_side.py in a subprocess: timm ``mobilenetv2_100`` with the
offline MobileNetV2 weights renamed by bench/timm_weights.py, layers blocks.1/2/4 (= our features.3/6/13), at our
input shape and coreset ratio. Its greedy coreset stops after --coreset-limit-s and its time is extrapolated.

Setup (once):
    python -m venv --system-site-packages bench/.venv-anomalib
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /tmp/torch-constraints.txt
    bench/.venv-anomalib/bin/pip install anomalib==2.7.0 -c /tmp/torch-constraints.txt
    bench/.venv-anomalib/bin/python bench/timm_weights.py \
        --weights ../shared/weights/mobilenet_v2-qnnpack_dequant-e48290fe.pth --out /tmp/mobilenetv2_100_from_tv.pth

Example:
    python -m bench.anomaly_bench --data-root ../shared/data/mvtec --categories bottle screw \
        --weights ../shared/weights/mobilenet_v2-qnnpack_dequant-e48290fe.pth \
        --anomalib-python bench/.venv-anomalib/bin/python --timm-weights /tmp/mobilenetv2_100_from_tv.pth
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from inspectkit.anomaly import PatchCoreConfig
from inspectkit.anomaly.metrics import image_auroc, pixel_auroc
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.cache import DecodeCache
from inspectkit.cli import run, script_parser
from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.models import describe_weights
from inspectkit.results import provenance, write_json

HERE = Path(__file__).resolve().parent
# timm mobilenetv2_100 stage outputs equal to our torchvision stages (same strides 4/8/16, channels 24/32/96;
# with the renamed weights the stage outputs agree exactly)
TIMM_LAYERS = {"features.3": "blocks.1", "features.6": "blocks.2", "features.13": "blocks.4"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding the category folders")
    parser.add_argument("--categories", nargs="+", default=["bottle", "screw"], help="category folder names")
    parser.add_argument("--weights", required=True, help="torchvision mobilenet_v2 state_dict file (ours)")
    parser.add_argument("--timm-weights", required=True,
                        help="the same weights in timm's names, from bench/timm_weights.py (anomalib's)")
    parser.add_argument("--anomalib-python", default=str(HERE / ".venv-anomalib" / "bin" / "python"),
                        help="python of the virtualenv that holds anomalib")
    parser.add_argument("--image-size", type=int, default=PatchCoreConfig.image_size,
                        help="our config's image size; anomalib gets the input shape ours chose")
    parser.add_argument("--coreset-ratio", type=float, default=PatchCoreConfig.coreset_ratio,
                        help="coreset ratio for both")
    parser.add_argument("--coreset-limit-s", type=float, default=60.0,
                        help="stop anomalib's greedy coreset after this many seconds and extrapolate its time")
    parser.add_argument("--out", default="results", help="folder for anomaly_bench.json")
    return parser


def run_anomalib(args: argparse.Namespace, images: dict[str, np.ndarray], layers: list[str], folder: Path) -> dict:
    """anomalib_side.py in the anomalib virtualenv on ``images``; its JSON record plus scores and maps."""
    np.savez(folder / "images.npz", **images)
    command = [args.anomalib_python, "-W", "ignore", str(HERE / "anomalib_side.py"),
               "--images", str(folder / "images.npz"), "--out", str(folder / "scores.npz"),
               "--timm-weights", args.timm_weights, "--torchvision-weights", args.weights,
               "--ratio", str(args.coreset_ratio), "--coreset-limit-s", str(args.coreset_limit_s),
               "--layers", ",".join(layers)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise UserError(f"anomalib side failed (exit {done.returncode}): {' '.join(command)}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(folder / "scores.npz") as outputs:
        return record, {k: outputs[k] for k in outputs}


def bench_category(args: argparse.Namespace, name: str, config: PatchCoreConfig) -> dict:
    tick = time.perf_counter()
    category = load_category(args.data_root, name, progress=False)
    record, _ = run_detection(category, config, args.weights, baseline=False, out=None, figures=False,
                              progress=False, category_s=time.perf_counter() - tick)
    shape = tuple(record["config"]["input_shape"])
    cache = DecodeCache()  # the files ours just read, at the same shape: the same pixels
    test = category.split_samples("test")
    images = {split: np.stack([cache.image(s.path, shape) for s in category.split_samples(split)])
              for split in ("train", "test")}
    masks = np.stack([cache.mask(s.mask_path, shape) for s in test])
    labels = np.array([s.is_defect for s in test])
    with tempfile.TemporaryDirectory() as tmp:
        theirs, outputs = run_anomalib(args, images, [TIMM_LAYERS[layer] for layer in config.layers], Path(tmp))
    anomalib = {**theirs, "image_auroc": image_auroc(labels, outputs["scores"]),
                "pixel_auroc": pixel_auroc(masks, outputs["maps"]), "end_to_end_s": theirs["timings"]["end_to_end_s"],
                "without_coreset_s": theirs["timings"]["without_coreset_s"]}
    if "scores_random_bank" in outputs:
        anomalib["random_bank"] = {"image_auroc": image_auroc(labels, outputs["scores_random_bank"]),
                                   "pixel_auroc": pixel_auroc(masks, outputs["maps_random_bank"])}
    ours = {"image_auroc": record["metrics"]["image_auroc"], "pixel_auroc": record["metrics"]["pixel_auroc"],
            "end_to_end_s": record["timings"]["total_s"], "timings": record["timings"],
            "memory_bank": record["memory_bank"], "peak_rss_mb": record["peak_rss_mb"], "notes": record["notes"]}
    return {"input_shape": list(shape), "counts": record["counts"], "ours": ours, "anomalib": anomalib,
            "speedup": anomalib["end_to_end_s"] / ours["end_to_end_s"],
            "speedup_without_anomalib_coreset": anomalib["without_coreset_s"] / ours["end_to_end_s"]}


def main(args: argparse.Namespace) -> dict:
    if not Path(args.anomalib_python).is_file():
        raise UserError(f"no anomalib virtualenv at {args.anomalib_python}; create it as --help shows")
    if not Path(args.timm_weights).is_file():
        raise UserError(f"no {args.timm_weights}; make it with bench/timm_weights.py as --help shows")
    config = PatchCoreConfig(image_size=args.image_size, coreset_ratio=args.coreset_ratio)
    load_before = os.getloadavg()
    categories = {}
    for name in args.categories:
        print(f"{name} ...", flush=True)
        categories[name] = bench_category(args, name, config)
    load_after = os.getloadavg()
    result = {
        "what": "our detector (run_detection, default config) beside anomalib's PatchCore torch model, same weights, "
                "same decoded images, same input shape and coreset ratio; AUROCs by inspectkit.anomaly.metrics",
        "config": config.as_dict(),
        "anomalib_layers": {layer: TIMM_LAYERS[layer] for layer in config.layers},
        "categories": categories,
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_after},
        "notes": [
            "ours end_to_end_s: run_detection's total_s (finding the category, model, decode from a warm cache, "
            "features, coreset, scoring, metrics). anomalib end_to_end_s: model, features, stacking the bank, "
            "coreset (projection and greedy), scoring the test set with its k-NN reweighted image score and its "
            "upsampled, blurred maps; it gets the decoded images for free and its metrics are not counted.",
            "anomalib's greedy coreset stops after --coreset-limit-s; where coreset.extrapolated is true its time "
            "is extrapolated from the measured rate (coreset.picked of coreset.coreset_size centres), its "
            "image_auroc / pixel_auroc are with the centres picked by then (anomalib's own first picks), and "
            "random_bank gives them with a full-size bank of random good patches instead; its test time is "
            "measured with that full-size bank.",
            "anomalib's embedding grid is that of its first layer (stride 4: 4x our patches per image); ours "
            "resamples all stages to stride 8 and mirrors a 16 px margin; the coreset ratio applies to each "
            "side's own patches.",
            "anomalib without_coreset_s leaves its coreset out altogether: a floor on its time that needs no "
            "extrapolation (speedup_without_anomalib_coreset).",
            "weights: bench/timm_weights.py renames the torchvision state dict into timm's mobilenetv2_100 names; "
            "anomalib.max_abs_logit_diff_vs_torchvision is the largest logit difference of the two networks on a "
            "random batch.",
            "timings on a shared 2-core machine (other jobs were running; see machine.load_avg_*): ours varies "
            "by about 2x between runs.",
        ],
        "provenance": provenance(seed=config.seed, weights=describe_weights(args.weights),
                                 data_root=args.data_root, timm_weights=args.timm_weights),
    }
    path = write_json(Path(args.out) / "anomaly_bench.json", result)
    print_table(categories)
    print(f"wrote {path}")
    return result


def print_table(categories: dict) -> None:
    """One row per side; anomalib's seconds are end to end, then without its coreset (a floor, no extrapolation)."""
    print(f"{'category':9s} {'detector':44s} {'image AUROC':>11s} {'pixel AUROC':>11s} {'seconds':>9s} "
          f"{'speed-up':>8s} {'s w/o coreset':>13s} {'speed-up':>8s}")
    for name, entry in categories.items():
        ours, theirs = entry["ours"], entry["anomalib"]
        coreset = theirs["coreset"]
        mark = "*" if coreset["extrapolated"] else " "
        print(f"{name:9s} {'ours (run_detection)':44s} {ours['image_auroc']:11.3f} {ours['pixel_auroc']:11.3f} "
              f"{ours['end_to_end_s']:9.1f}")
        rows = [(f"anomalib, greedy bank ({coreset['picked']} of {coreset['coreset_size']} centres)", theirs)]
        if "random_bank" in theirs:
            rows.append((f"anomalib, random bank of {coreset['coreset_size']}", theirs["random_bank"]))
        for label, scores in rows:
            print(f"{'':9s} {label:44s} {scores['image_auroc']:11.3f} {scores['pixel_auroc']:11.3f} "
                  f"{theirs['end_to_end_s']:8.0f}{mark} {entry['speedup']:7.0f}x {theirs['without_coreset_s']:13.1f} "
                  f"{entry['speedup_without_anomalib_coreset']:7.1f}x")
    print("* extrapolated: anomalib's greedy coreset was stopped at --coreset-limit-s; its time is scaled from the "
          "centres picked by then")


if __name__ == "__main__":
    run(main, get_args_parser())
