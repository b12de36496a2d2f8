"""The anomalib half of bench/anomaly_bench.py: time anomalib's own PatchCore (torch model, no Lightning engine)
phase by phase on images the benchmark decoded. Runs inside the scratch virtualenv that holds anomalib; prints
one JSON line on stdout. Not part of inspectkit: anomalib is never one of its dependencies.

Example (the benchmark calls it like this):
    bench/.venv-anomalib/bin/python bench/anomalib_side.py --images /tmp/bench_images.npz --ratio 0.01
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="npz with uint8 arrays 'train' and 'test' (N, H, W, 3)")
    parser.add_argument("--ratio", type=float, required=True, help="coreset sampling ratio")
    parser.add_argument("--backbone", default="resnet18", help="timm backbone name (default: resnet18)")
    parser.add_argument("--layers", default="layer2,layer3", help="comma-separated layers (default: layer2,layer3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    return parser


def batches(images: np.ndarray, size: int):
    for start in range(0, len(images), size):
        x = torch.from_numpy(images[start:start + size]).permute(0, 3, 1, 2).float() / 255.0
        yield (x - MEAN) / STD


def main(args: argparse.Namespace) -> None:
    import anomalib
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    data = np.load(args.images)
    timings = {}
    torch.manual_seed(0)
    tick = time.perf_counter()
    # pre_trained=False: these machines cannot download timm weights; timing does not depend on the weights
    model = PatchcoreModel(layers=args.layers.split(","), backbone=args.backbone, pre_trained=False)
    timings["model"] = time.perf_counter() - tick
    model.train()
    tick = time.perf_counter()
    with torch.no_grad():
        for x in batches(data["train"], args.batch_size):
            model(x)
    timings["features_train"] = time.perf_counter() - tick
    bank = sum(len(e) for e in model.embedding_store)
    print(json.dumps({"event": "coreset_start", "bank": bank, "features_train": timings["features_train"]}),
          flush=True)
    tick = time.perf_counter()
    model.subsample_embedding(args.ratio)
    timings["coreset"] = time.perf_counter() - tick
    model.eval()
    tick = time.perf_counter()
    scores = []
    with torch.no_grad():
        for x in batches(data["test"], args.batch_size):
            scores.append(model(x).pred_score)
    timings["features_and_scoring_test"] = time.perf_counter() - tick
    print(json.dumps({"event": "done", "anomalib_version": anomalib.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "bank_before": bank,
                      "coreset_size": len(model.memory_bank), "timings": timings}), flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
