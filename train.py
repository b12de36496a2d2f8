"""Train the defect-type classifier: four attempts, each on K pooled stratified splits, mean ± std on test.

Examples:
    python train.py --attempt 3 --demo                            # synthetic data, random-init weights, offline
    python train.py --attempt all --demo --epochs 1               # every attempt, a quick smoke run
    python train.py --attempt 3                                   # hazelnut under ./data or $MVTEC_ROOT
    python train.py --attempt all --category bottle --data-root /path/to/mvtec \\
        --arch mobilenet_v2 --weights mobilenet_v2.pth            # offline: a state_dict file (see the README)

Writes <out>/splits_<category>.json, <out>/attempt_N.json and <out>/checkpoints/attempt_N/split_K.pt.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from inspectkit.attempts import select_attempts
from inspectkit.cache import DecodeCache
from inspectkit.classifier import check_trainable
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
from inspectkit.errors import UserError
from inspectkit.gate import check_gate_arch
from inspectkit.models import build_model, check_arch, describe_weights, resolve_device
from inspectkit.results import ensure_writable_dir, provenance, write_json
from inspectkit.splits import check_split_count, make_splits
from inspectkit.training import train_attempt


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--attempt", default="all", help="attempt 1, 2, 3 or 4, a comma list such as 3,4, or all")
    add_data_args(parser)
    add_model_args(parser, arch_default="resnet18")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every attempt's number of epochs; if not given, each attempt's own")
    parser.add_argument("--image-size", type=int, default=None,
                        help="override every attempt's input size in pixels, e.g. 64 for a quick test; "
                             "if not given, each attempt's own")
    parser.add_argument("--splits", type=int, default=5, help="number of stratified splits, K")
    parser.add_argument("--seed", type=seed, default=0, help="seed of split k is seed + k; seeds training too")
    add_out_arg(parser)
    return parser


def main(args: argparse.Namespace) -> None:
    attempts = select_attempts(args.attempt)
    check_arch(args.arch)
    resolve_weights(args)
    check_split_count(args.splits)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1 (got {args.epochs})")
    if args.image_size is not None and args.image_size < 32:
        raise UserError(f"--image-size must be at least 32 pixels (got {args.image_size})")
    device = resolve_device(args.device)
    out = ensure_writable_dir(args.out)
    # everything that can fail is checked before the first write, so a failing run leaves --out as it was:
    check_trainable(args.arch, "none" if args.weights == "imagenet" else args.weights)  # arch, file: no network
    if any(a.anomaly_gate for a in attempts):
        check_gate_arch(args.arch)
    category = resolve_category(args)
    if args.weights == "imagenet":
        build_model(args.arch, "imagenet")  # fetch (or find cached) the ImageNet weights: offline fails here
    manifest = make_splits(category, args.splits, args.seed)  # too few images, too many splits
    torch.manual_seed(args.seed)
    weights_info = describe_weights(args.weights)
    common = {"seed": args.seed, "weights": weights_info, "data_root": data_root_of(category), "demo": category.demo,
              "command": args.command}
    write_json(out / f"splits_{category.name}.json", {**manifest, "provenance": provenance(**common)})

    cache, banks = DecodeCache(), {}
    for attempt in attempts:
        if args.image_size is not None:
            attempt = replace(attempt, image_size=args.image_size)
        result = train_attempt(attempt, category, manifest, arch=args.arch, weights=args.weights, device=device,
                               out=Path(out), epochs=args.epochs, cache=cache, banks=banks)
        path = write_json(out / f"attempt_{attempt.number}.json", {**result, "provenance": provenance(**common)})
        test = result["test"]
        print(f"attempt {attempt.number} ({attempt.name}): test macro-F1 {test['macro_f1']['mean']:.3f} ± "
              f"{test['macro_f1']['std']:.3f}, accuracy {test['accuracy']['mean']:.3f} ± "
              f"{test['accuracy']['std']:.3f}, {result['timing']['wall_s']:.0f} s -> {path}")


if __name__ == "__main__":
    run(main, get_args_parser())
