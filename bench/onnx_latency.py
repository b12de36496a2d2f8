"""A fitted detector exported to ONNX: parity with the torch detector on every test image of its category, and
per-image latency (batch 1) of torch and onnxruntime on this CPU with the same thread count, under each tried
onnxruntime setting; writes results/anomaly_onnx_<category>.json.

Each setting is timed in --rounds rounds, torch and onnxruntime back to back in each, so that both see the same
load: on a shared machine single timings are noisy, and the load average is recorded beside each round.

Examples:
    python -m bench.onnx_latency --detector /tmp/onnxfit/detectors/anomaly_bottle_mobilenet_v2.pt \
        --data-root ../shared/data/mvtec --category bottle
    python -m bench.onnx_latency --detector results/detectors/anomaly_screw_mobilenet_v2.pt \
        --data-root ../shared/data/mvtec --category screw --opsets 17 20 --optimizations all --onnx /tmp/screw.onnx
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inspectkit.anomaly import PatchCore
from inspectkit.anomaly.onnx_export import DEFAULT_OPSET, check_parity, export_onnx, latency
from inspectkit.cache import DecodeCache
from inspectkit.cli import run, script_parser
from inspectkit.data import load_category
from inspectkit.results import provenance, write_json

OPTIMIZATIONS = ("all", "extended", "basic", "disable")


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--detector", required=True, help="a detector file written by anomaly.py")
    parser.add_argument("--data-root", default=None, help="folder holding the category folders")
    parser.add_argument("--category", required=True, help="the detector's category, e.g. bottle")
    parser.add_argument("--onnx", default=None, help="keep the model of the first opset here (else a temp file)")
    parser.add_argument("--opsets", type=int, nargs="+", default=[DEFAULT_OPSET], help="ONNX opsets to export")
    parser.add_argument("--optimizations", nargs="+", default=list(OPTIMIZATIONS), choices=OPTIMIZATIONS,
                        help="onnxruntime graph optimisation levels to time")
    parser.add_argument("--spinning", nargs="+", default=["on", "off"], choices=["on", "off"],
                        help="onnxruntime intra-op threads busy-wait between steps (on, its default) or sleep")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed images before each measurement")
    parser.add_argument("--repeats", type=int, default=20, help="timed images per measurement (median)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per setting")
    parser.add_argument("--out", default="results", help="folder for anomaly_onnx_<category>.json")
    return parser


def time_setting(detector: PatchCore, path: Path, images: torch.Tensor, args: argparse.Namespace, opset: int,
                 optimization: str, spinning: str) -> dict:
    rounds = []
    for _ in range(args.rounds):
        measured = latency(detector, path, images, args.threads, args.warmup, args.repeats, optimization,
                           spinning == "on")
        rounds.append({"torch_ms": measured["torch"]["median_ms"], "ort_ms": measured["onnxruntime"]["median_ms"],
                       "load_average_1min": round(os.getloadavg()[0], 2)})
    torch_ms = statistics.median(r["torch_ms"] for r in rounds)
    ort_ms = statistics.median(r["ort_ms"] for r in rounds)
    row = {"opset": opset, "optimization": optimization, "spinning": spinning, "torch_ms": torch_ms,
           "ort_ms": ort_ms, "ort_over_torch": round(ort_ms / torch_ms, 3), "rounds": rounds}
    print(f"opset {opset} {optimization:>8} spinning {spinning:>3}: torch {torch_ms:7.1f} ms, onnxruntime "
          f"{ort_ms:7.1f} ms per image ({row['ort_over_torch']:.2f}x)", flush=True)
    return {**row, "session": measured["onnxruntime_session"], "versions": measured["versions"]}


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    detector = PatchCore.load(args.detector)
    category = load_category(args.data_root, args.category, progress=False)
    cache = DecodeCache()
    images = torch.stack([cache.image_tensor(s.path, detector.input_shape) for s in category.split_samples("test")])
    trials, exports, parity = [], [], None
    with tempfile.TemporaryDirectory() as scratch:
        for opset in args.opsets:
            keep = args.onnx is not None and opset == args.opsets[0]
            start = time.perf_counter()
            path = export_onnx(detector, args.onnx if keep else Path(scratch) / f"opset{opset}.onnx", opset)
            exports.append({"opset": opset, "seconds": round(time.perf_counter() - start, 2),
                            "bytes": path.stat().st_size, "kept_at": str(path) if keep else None})
            if parity is None:
                parity = {"opset": opset, **check_parity(detector, path, images, args.threads)}
                print(f"parity on {len(images)} test images: {parity}", flush=True)
            trials += [time_setting(detector, path, images, args, opset, optimization, spinning)
                       for optimization in args.optimizations for spinning in args.spinning]
    default = next((t for t in trials if t["optimization"] == "all" and t["spinning"] == "on"), trials[0])
    best = min(trials, key=lambda t: t["ort_ms"])
    result = {
        "category": args.category,
        "detector_file": str(args.detector),
        "input_shape": list(detector.input_shape),
        "bank_shape": list(detector.bank.shape),
        "exports": exports,
        "parity": parity,
        "latency": {"threads": args.threads, "batch": 1, "warmup": args.warmup, "repeats": args.repeats,
                    "rounds": args.rounds, "onnxruntime_defaults": default, "fastest_onnxruntime": best,
                    "target": "onnxruntime no slower than torch per image",
                    "target_met": default["ort_ms"] <= default["torch_ms"], "trials": trials},
        "note": "torch is detector.score (features, nearest neighbours, scipy blurs) with torch.set_num_threads "
                "(threads); onnxruntime is one session.run of the exported graph on the CPU provider with "
                "intra_op_num_threads (threads). Times are the median over rounds of each round's median; the "
                "machine is shared, so single rounds vary (see load_average_1min).",
        "provenance": provenance(weights=detector.weights, data_root=args.data_root, cpu_count=os.cpu_count()),
    }
    out = write_json(Path(args.out) / f"anomaly_onnx_{args.category}.json", result)
    print(f"onnxruntime defaults {default['ort_ms']} ms vs torch {default['torch_ms']} ms per image; "
          f"fastest {best['optimization']} spinning {best['spinning']} opset {best['opset']} {best['ort_ms']} ms; "
          f"wrote {out}")
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
