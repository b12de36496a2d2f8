"""How each default of the detector was chosen: the library pipeline (run_detection) under a ladder of settings,
from the detector as it was to today's defaults, on real categories (bottle, screw) and synthetic ones of other
kinds (texture, thin-frame border, non-square, mixed sizes, grey). Writes results/anomaly_ablation.json and prints
image / pixel AUROC per category and setting.

Examples:
    python -m bench.anomaly_ablation --data-root /path/to/mvtec --categories bottle screw --weights mobilenet_v2.pth
    python -m bench.anomaly_ablation --weights none --settings default before    # synthetic only, offline
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from inspectkit.anomaly import PatchCoreConfig
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.cli import run, script_parser
from inspectkit.data import load_category
from inspectkit.results import provenance, write_json
from inspectkit.synthetic import make_category

# name -> the settings that differ from PatchCoreConfig's defaults; each rung adds one change to the one above
SETTINGS: dict[str, dict] = {
    "before": {"image_size": 224, "pad": 0, "score_sigma": 0.5, "coreset_ratio": 0.01},  # 0.5 cell ~ map max
    "+margin": {"image_size": 224, "score_sigma": 0.5, "coreset_ratio": 0.01},
    "+320px": {"score_sigma": 0.5, "coreset_ratio": 0.01},
    "+2%bank": {"score_sigma": 0.5},
    "default": {},  # + image score from the grid smoothed by one cell
    "default-margin": {"pad": 0},
    "layers6+13": {"layers": ("features.6", "features.13")},
}
SYNTHETIC = {  # name -> make_category arguments: kinds a user's product line may look like
    "syn_object": {"image_size": 256},
    "syn_texture": {"kind": "texture", "image_size": 256},
    "syn_border": {"kind": "border", "image_size": 256},
    "syn_wide": {"width": 400, "height": 160},
    "syn_mixed": {"sizes": [(256, 256), (320, 320), (192, 192)]},
    "syn_grey": {"image_size": 256, "grey": True},
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", default=None, help="folder of real categories (MVTec layout)")
    parser.add_argument("--categories", nargs="*", default=["bottle", "screw"], help="real categories to run")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a mobilenet_v2 state_dict file")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--no-synthetic", action="store_true", help="real categories only")
    parser.add_argument("--out", default="results", help="folder for anomaly_ablation.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    categories = []
    if args.data_root:
        categories += [load_category(args.data_root, name, progress=False) for name in args.categories]
    with tempfile.TemporaryDirectory() as synthetic_root:
        if not args.no_synthetic:
            for name, kwargs in SYNTHETIC.items():
                make_category(synthetic_root, name, n_train=40, n_test_good=10, n_per_defect=6, seed=0, **kwargs)
                categories.append(load_category(synthetic_root, name, progress=False))
        rows = []
        for setting in args.settings:
            config = PatchCoreConfig(**SETTINGS[setting])
            for category in categories:
                record, _ = run_detection(category, config, args.weights, progress=False, figures=False)
                m, b = record["metrics"], record["baseline"]
                rows.append({"setting": setting, "category": category.name, "image_auroc": m["image_auroc"],
                             "pixel_auroc": m["pixel_auroc"], "pro": m["pro"],
                             "baseline_image_auroc": b["image_auroc"], "baseline_pixel_auroc": b["pixel_auroc"],
                             "seconds": record["timings"]["total_s"], "peak_rss_mb": record["peak_rss_mb"],
                             "config": config.as_dict()})
                print(f"{setting:<15} {category.name:<12} image {m['image_auroc']:.3f} pixel {m['pixel_auroc']:.3f} "
                      f"(baseline {b['image_auroc']:.3f} / {b['pixel_auroc']:.3f}) "
                      f"{record['timings']['total_s']:.1f}s", flush=True)
    result = {"settings": SETTINGS, "synthetic": {k: str(v) for k, v in SYNTHETIC.items()}, "rows": rows,
              "provenance": provenance(seed=0, weights={"spec": args.weights}, data_root=args.data_root)}
    write_json(Path(args.out) / "anomaly_ablation.json", result)
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
