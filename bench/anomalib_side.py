"""The anomalib half of bench/anomaly_bench.py: anomalib's own PatchCore torch model (no Lightning engine) fitted
and scored on the images the benchmark decoded, with the offline MobileNetV2 weights renamed for timm. Runs inside
the scratch virtualenv that holds anomalib; writes image scores and anomaly maps to --out and prints one JSON line.
Not part of inspectkit: anomalib is never one of its dependencies.

The k-center-greedy coreset is anomalib's (its projection, distance update and arg-max), run under a time limit:
the centres picked by then are anomalib's first picks, the memory bank for scoring, and the full selection's time
is extrapolated from the measured rate. The test set is then also scored with a bank of the full coreset size
(random good patches): that gives anomalib's true scoring time, and a second accuracy figure.

Example (the benchmark calls it like this):
    bench/.venv-anomalib/bin/python bench/anomalib_side.py --images /tmp/images.npz --out /tmp/scores.npz \
        --timm-weights /tmp/mobilenetv2_100_from_tv.pth --ratio 0.02 --coreset-limit-s 120
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="npz with uint8 arrays 'train' and 'test' (N, H, W, 3)")
    parser.add_argument("--out", required=True, help="npz to write: 'scores' (N,) and 'maps' (N, H, W)")
    parser.add_argument("--timm-weights", required=True, help="timm state_dict for --backbone (bench/timm_weights.py)")
    parser.add_argument("--torchvision-weights", default=None,
                        help="the torchvision original of --timm-weights: report the largest logit difference")
    parser.add_argument("--ratio", type=float, required=True, help="coreset sampling ratio")
    parser.add_argument("--coreset-limit-s", type=float, required=True,
                        help="stop the greedy selection after this many seconds and extrapolate its time")
    parser.add_argument("--backbone", default="mobilenetv2_100", help="timm backbone name (default: mobilenetv2_100)")
    parser.add_argument("--layers", default="blocks.1,blocks.2,blocks.4",
                        help="comma-separated timm layers (default: blocks.1,blocks.2,blocks.4)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed: projection and first centre (default: 0)")
    return parser


def batches(images: np.ndarray, size: int):
    for start in range(0, len(images), size):
        x = torch.from_numpy(images[start:start + size]).permute(0, 3, 1, 2).float() / 255.0
        yield (x - MEAN) / STD


def timed_coreset(embedding: torch.Tensor, ratio: float, limit_s: float) -> tuple[list[int], dict]:
    """anomalib's ``KCenterGreedy.select_coreset_idxs`` (2.7.0), the same steps, stopped after ``limit_s``."""
    from anomalib.models.components import KCenterGreedy

    sampler = KCenterGreedy(embedding=embedding, sampling_ratio=ratio)
    tick = time.perf_counter()
    sampler.model.fit(sampler.embedding)
    sampler.features = sampler.model.transform(sampler.embedding)
    sampler.reset_distances()
    projection_s = time.perf_counter() - tick
    tick = time.perf_counter()
    idx = torch.randint(high=sampler.n_observations, size=(1,), device=sampler.features.device).squeeze()
    selected = [idx]
    for _ in range(sampler.coreset_size - 1):
        if time.perf_counter() - tick > limit_s:
            break
        sampler.update_distances(cluster_center=idx)
        idx = sampler.get_new_idx()
        sampler.min_distances.scatter_(0, idx.unsqueeze(0).unsqueeze(1), 0.0)
        selected.append(idx)
    greedy_s = time.perf_counter() - tick
    picked, target = len(selected), sampler.coreset_size
    greedy_full_s = greedy_s * (target - 1) / max(picked - 1, 1)
    info = {"bank_before": int(embedding.shape[0]), "projection_dim": int(sampler.features.shape[1]),
            "coreset_size": target, "picked": picked, "projection_s": projection_s, "greedy_measured_s": greedy_s,
            "extrapolated": picked < target, "coreset_s": projection_s + greedy_full_s}
    return torch.stack(selected).tolist(), info


def score(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """anomalib's inference: image scores (k-NN reweighted), anomaly maps (upsampled, blurred), seconds."""
    scores, maps = [], []
    tick = time.perf_counter()
    with torch.no_grad():
        for x in batches(images, batch_size):
            result = model(x)
            scores.append(result.pred_score.reshape(-1))
            maps.append(result.anomaly_map.reshape(len(x), *x.shape[-2:]))
    seconds = time.perf_counter() - tick
    return torch.cat(scores).numpy(), torch.cat(maps).numpy(), seconds


def main(args: argparse.Namespace) -> None:
    import anomalib
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    timm_state = torch.load(args.timm_weights, map_location="cpu", weights_only=True)
    logit_diff = None
    if args.torchvision_weights:
        from timm_weights import max_logit_difference  # bench/, the folder of this script

        tv_state = torch.load(args.torchvision_weights, map_location="cpu", weights_only=True)
        logit_diff = max_logit_difference(tv_state, timm_state)
    torch.manual_seed(args.seed)
    data = np.load(args.images)
    train, test = data["train"], data["test"]
    timings = {}
    tick = time.perf_counter()
    model = PatchcoreModel(layers=args.layers.split(","), backbone=args.backbone, pre_trained=False)
    loaded = model.feature_extractor.feature_extractor.load_state_dict(timm_state, strict=False)
    if loaded.missing_keys:
        raise SystemExit(f"{args.timm_weights} lacks {len(loaded.missing_keys)} tensors of {args.backbone}, "
                         f"e.g. {loaded.missing_keys[:3]}")
    timings["model"] = time.perf_counter() - tick

    model.train()  # training mode: forward stores the embeddings (its feature extractor stays in eval mode)
    tick = time.perf_counter()
    for x in batches(train, args.batch_size):
        model(x)
    timings["features_train"] = time.perf_counter() - tick
    grid = model.embedding_store[0].shape[0] // min(args.batch_size, len(train))
    tick = time.perf_counter()
    embedding = torch.vstack(model.embedding_store)
    model.embedding_store.clear()
    timings["stack"] = time.perf_counter() - tick
    idxs, coreset = timed_coreset(embedding, args.ratio, args.coreset_limit_s)
    timings["coreset"] = coreset["coreset_s"]
    model.memory_bank = embedding[idxs]
    model.eval()

    scores, maps, timings["test"] = score(model, test, args.batch_size)
    outputs = {"scores": scores, "maps": maps}
    if coreset["extrapolated"]:
        # The greedy bank is smaller than the full coreset: scoring with it would be quicker than anomalib is. A
        # bank of the full size, random good patches, gives the true scoring time, and a second accuracy figure.
        rows = torch.randperm(len(embedding), generator=torch.Generator().manual_seed(args.seed))
        model.memory_bank = embedding[rows[:coreset["coreset_size"]]]
        timings["test_with_picked_bank"] = timings["test"]
        outputs["scores_random_bank"], outputs["maps_random_bank"], timings["test"] = score(
            model, test, args.batch_size)
    timings["without_coreset_s"] = timings["model"] + timings["features_train"] + timings["stack"] + timings["test"]
    timings["end_to_end_s"] = timings["without_coreset_s"] + timings["coreset"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **outputs)
    print(json.dumps({"anomalib_version": anomalib.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "backbone": args.backbone, "layers": args.layers.split(","),
                      "embedding_dim": int(embedding.shape[1]), "patches_per_image": grid,
                      "num_neighbors": model.num_neighbors, "max_abs_logit_diff_vs_torchvision": logit_diff,
                      "coreset": coreset,
                      "timings": timings}), flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
