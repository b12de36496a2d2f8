"""The good-only threshold across validation shares and seeds: for each category, share and seed, the detector is
fitted on the rest of train/good (run_detection) and the test set is scored at the threshold set on the held-out
share; records image AUROC, test false-alarm rate, recall, precision and F1, and the oracle F1 beside them.

Writes results/anomaly_threshold.json.

Examples:
    python -m bench.anomaly_threshold --data-root /path/to/mvtec --categories bottle screw --weights mobilenet_v2.pth
    python -m bench.anomaly_threshold --data-root /path/to/mvtec --categories bottle --shares 0.1 0.2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspectkit.cli import run, script_parser


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding the category folders")
    parser.add_argument("--categories", nargs="+", default=["bottle", "screw"], help="categories to measure")
    parser.add_argument("--weights", required=True, help="backbone weights: a state_dict file, imagenet or none")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.2], help="validation shares")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the held-out share")
    parser.add_argument("--false-alarm", type=float, default=0.01, help="false-alarm target on validation")
    parser.add_argument("--out", default="results", help="folder for anomaly_threshold.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    from inspectkit.anomaly import PatchCoreConfig
    from inspectkit.anomaly.pipeline import run_detection
    from inspectkit.data import load_category
    from inspectkit.models import describe_weights
    from inspectkit.results import provenance, write_json

    rows = []
    for name in args.categories:
        category = load_category(args.data_root, name, progress=False)
        for share in args.shares:
            for seed in args.seeds:
                config = PatchCoreConfig(validation_share=share, seed=seed, false_alarm=args.false_alarm)
                record, _ = run_detection(category, config, args.weights, baseline=False, figures=False,
                                          progress=False)
                m = record["metrics"]
                at = m["at_threshold"]["image"]
                row = {"category": name, "validation_share": share, "seed": seed,
                       "validation_images": m["threshold"]["validation_images"],
                       "image_auroc": m["image_auroc"], "threshold": at["threshold"],
                       "threshold_decided_by": m["threshold"]["image"]["decided_by"],
                       "test_false_alarm_rate": at["false_alarm_rate"], "test_recall": at["recall"],
                       "test_precision": at["precision"], "test_f1": at["f1"], "oracle_f1": m["oracle"]["f1_max"],
                       "pixel_false_alarm_rate": (m["at_threshold"]["pixel"] or {}).get("false_alarm_rate"),
                       "pixel_recall": (m["at_threshold"]["pixel"] or {}).get("recall")}
                rows.append(row)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    result = {"rows": rows, "false_alarm_target": args.false_alarm,
              "note": "each row fits the default detector on train/good minus the held-out share and scores the "
                      "whole test set at the threshold set on that share; no test label is used for the threshold",
              "provenance": provenance(seed=args.seeds[0], weights=describe_weights(args.weights),
                                       data_root=str(args.data_root))}
    path = write_json(Path(args.out) / "anomaly_threshold.json", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
