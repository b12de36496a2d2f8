"""How the detector's score should depend on the position in the frame: one fit per category and seed, then every
scoring candidate on the same features (plain nearest neighbour, the Gaussian baseline, the border ring left out,
per-cell normalisation with and without shrinkage and with a full or partial spread, fusion with the Gaussian),
each with the features whitened (whitening.py) at every power of --whiten: one backbone pass feeds one detector per
power.
Real categories (--data-root) and synthetic kinds (object, texture, thin frame, crops whose edges move, wide,
mixed sizes, grey). Writes results/anomaly_position.json and prints image / pixel AUROC per candidate, the mean
over seeds, and where the held-out good images peak.

Examples:
    python -m bench.anomaly_position --data-root /path/to/mvtec --categories bottle screw kolektorsdd \\
        --weights mobilenet_v2.pth
    python -m bench.anomaly_position --weights none --seeds 0      # synthetic kinds only, offline, a minute
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from inspectkit.anomaly import GaussianBaseline, PatchCore, PatchCoreConfig
from inspectkit.anomaly.maps import PostProcess
from inspectkit.anomaly.metrics import PixelCurves, image_auroc
from inspectkit.anomaly.pipeline import check_test_set, decode_batches, train_sizes
from inspectkit.anomaly.position import outer_ring_share, position_statistics
from inspectkit.anomaly.threshold import split_validation
from inspectkit.cache import DecodeCache
from inspectkit.cli import run, script_parser
from inspectkit.data import load_category
from inspectkit.results import provenance, write_json
from inspectkit.synthetic import make_category

SYNTHETIC = {  # name -> make_category arguments
    "syn_object": {"image_size": 256},
    "syn_texture": {"kind": "texture", "image_size": 256},
    "syn_border": {"kind": "border", "image_size": 256},
    "syn_crops": {"kind": "crops", "image_size": 256},
    "syn_crops_faint": {"kind": "crops", "image_size": 256, "defect_strength": 0.5},
    "syn_wide": {"width": 400, "height": 160},
    "syn_mixed": {"sizes": [(256, 256), (320, 320), (192, 192)]},
    "syn_grey_crops_faint": {"kind": "crops", "image_size": 256, "grey": True, "defect_strength": 0.5},
}
BORDER_CELLS = 3


def raw_grids(category, config: PatchCoreConfig, weights: str, powers: list[float]) -> dict:
    """Nearest-neighbour patch grids (one per whitening power) and Gaussian patch grids of the held-out good images
    and of the test images."""
    test = check_test_set(category)
    good = category.split_samples("train")
    train, validation = split_validation(good, config.validation_share, config.seed)
    detectors = {power: PatchCore.build(replace(config, whiten=power), weights) for power in powers}
    first = detectors[powers[0]]
    shape = config.detector_shape(train_sizes(category, good))
    gaussian = GaussianBaseline(shape)
    cache = DecodeCache(memory=False)
    for detector in detectors.values():
        detector.begin_fit(len(train), shape)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for batch in decode_batches(cache, train, shape, config.batch_size, pool):
            features = first.extract(batch)
            for detector in detectors.values():
                detector.add_good(features)
            gaussian.update(features)
        for detector in detectors.values():
            detector.finish_fit()
        gaussian.finish()

        def grids(samples):
            nn, gauss = {power: [] for power in powers}, []
            for batch in decode_batches(cache, samples, shape, config.batch_size, pool):
                features = first.extract(batch)
                for power, detector in detectors.items():
                    nn[power].append(detector.patch_scores(features))
                gauss.append(gaussian.patch_scores(features))
            return {power: torch.cat(parts).numpy() for power, parts in nn.items()}, torch.cat(gauss).numpy()

        val_nn, val_gauss = grids(validation)
        test_nn, test_gauss = grids(test)
        masks = np.stack(list(pool.map(lambda s: cache.mask(s.mask_path, shape), test)))
    has_mask = np.array([s.mask_path is not None or not s.is_defect for s in test])
    return {"val_nn": val_nn, "val_gauss": val_gauss, "test_nn": test_nn, "test_gauss": test_gauss,
            "masks": masks, "has_mask": has_mask, "labels": np.array([s.is_defect for s in test]), "shape": shape,
            "pixel": bool(category.has_ground_truth and has_mask.any())}


def _cell_z(val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-cell standardisation without shrinkage: each cell's own mean and standard deviation."""
    return (test - val.mean(axis=0)) / np.maximum(val.std(axis=0, ddof=1), 1e-12)


def _shrunk(val: np.ndarray, test: np.ndarray, power: float) -> np.ndarray:
    loc, spread = position_statistics(val, power)
    return (test - loc) / spread


def candidates(g: dict) -> dict[str, tuple[np.ndarray, bool]]:
    """name -> (test patch-score grids, whether the image score leaves the border ring out)."""
    vg, tg = g["val_gauss"], g["test_gauss"]
    out = {"Gaussian baseline": (tg, False)}
    for power in g["val_nn"]:
        vn, tn = g["val_nn"][power], g["test_nn"][power]
        features = "" if power == 0 else f"whitened {power:g}: "
        out.update({
            f"{features}nearest neighbour": (tn, False),
            f"{features}nearest neighbour, image score without the {BORDER_CELLS}-cell border": (tn, True),
            f"{features}per-cell z, no shrinkage": (_cell_z(vn, tn), False),
            f"{features}per-cell location only (p = 0)": (_shrunk(vn, tn, 0.0), False),
            f"{features}per-cell, shrunk, half spread (p = 0.5)": (_shrunk(vn, tn, 0.5), False),
            f"{features}per-cell, shrunk, full spread (p = 1)": (_shrunk(vn, tn, 1.0), False),
            f"{features}fusion: per-cell z of nearest neighbour + of Gaussian": (
                _shrunk(vn, tn, 1.0) + _shrunk(vg, tg, 1.0), False),
        })
    return out


def measure(g: dict, config: PatchCoreConfig) -> dict[str, dict]:
    grid = g["val_gauss"].shape[1:]
    post = PostProcess(grid, g["shape"], config.sigma, config.score_sigma)
    h, w = grid
    inner = np.zeros((h, w), bool)
    inner[BORDER_CELLS:h - BORDER_CELLS, BORDER_CELLS:w - BORDER_CELLS] = True
    rows = {}
    with torch.inference_mode():
        for name, (grids, no_border) in candidates(g).items():
            t = torch.from_numpy(np.ascontiguousarray(grids, dtype=np.float32))
            if no_border and inner.any():
                smoothed = torch.matmul(torch.matmul(post.score_rows, t), post.score_cols_t).numpy()
                scores = smoothed[:, inner].max(axis=1)
            else:
                scores = post.image_scores(t).numpy()
            pixel = None
            if g["pixel"]:
                keep = g["has_mask"]
                pixel = PixelCurves.measure(g["masks"][keep], post.maps(t[torch.from_numpy(keep)]).numpy()).auroc()
            rows[name] = {"image_auroc": image_auroc(g["labels"], scores), "pixel_auroc": pixel}
    plain = g["val_nn"][0.0]
    rows["_diagnostic"] = {"outer_ring_share_val_nn": outer_ring_share(plain),
                           "outer_ring_share_val_default": outer_ring_share(_shrunk(plain, plain, 0.5))}
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", default=None, help="folder of real categories (MVTec layout)")
    parser.add_argument("--categories", nargs="*", default=["bottle", "screw", "kolektorsdd"],
                        help="real categories under --data-root")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a mobilenet_v2 state_dict file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the validation split, the patch pool and the coreset")
    parser.add_argument("--whiten", type=float, nargs="+", default=[0.0, 0.25, 0.5],
                        help="whitening powers to compare; 0 (plain Euclidean features, the reference) always runs")
    parser.add_argument("--no-synthetic", action="store_true", help="real categories only")
    parser.add_argument("--out", default="results", help="folder for anomaly_position.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as synthetic_root:
        categories = [load_category(args.data_root, n, progress=False) for n in args.categories] if args.data_root \
            else []
        if not args.no_synthetic:
            for name, kwargs in SYNTHETIC.items():
                make_category(synthetic_root, name, n_train=60, n_test_good=15, n_per_defect=8, seed=0, **kwargs)
                categories.append(load_category(synthetic_root, name, progress=False))
        for category in categories:
            for seed in args.seeds:
                config = PatchCoreConfig(seed=seed)
                measured = measure(raw_grids(category, config, args.weights, sorted(set(args.whiten) | {0.0})), config)
                diagnostic = measured.pop("_diagnostic")
                for name, metrics in measured.items():
                    rows.append({"category": category.name, "seed": seed, "candidate": name, **metrics})
                rows.append({"category": category.name, "seed": seed, "candidate": "_diagnostic", **diagnostic})
                print(f"{category.name} seed {seed}: " + ", ".join(
                    f"{k.split(' (')[0][:28]} {v['image_auroc']:.3f}" for k, v in measured.items()), flush=True)
    table = summary(rows)
    print(format_table(table))
    result = {"rows": rows, "mean_over_seeds": table, "seeds": args.seeds, "synthetic": SYNTHETIC,
              "config": PatchCoreConfig().as_dict(),
              "provenance": provenance(seed=args.seeds[0], weights={"spec": args.weights}, data_root=args.data_root)}
    write_json(Path(args.out) / "anomaly_position.json", result)
    return result


def summary(rows: list[dict]) -> dict:
    """category -> candidate -> mean image / pixel AUROC over the seeds (and the diagnostic's mean)."""
    table: dict[str, dict[str, dict]] = {}
    for row in rows:
        table.setdefault(row["category"], {}).setdefault(row["candidate"], []).append(row)
    out = {}
    for category, by_candidate in table.items():
        out[category] = {}
        for candidate, items in by_candidate.items():
            keys = [k for k in items[0] if k not in ("category", "seed", "candidate")]
            out[category][candidate] = {k: (float(np.mean([i[k] for i in items])) if items[0][k] is not None
                                            else None) for k in keys}
    return out


def format_table(table: dict) -> str:
    names = [n for n in next(iter(table.values())) if n != "_diagnostic"]
    lines = ["mean over seeds: image AUROC / pixel AUROC"]
    for category, by_candidate in table.items():
        lines.append(f"{category}: good images peaking in the outer ring "
                     f"{by_candidate['_diagnostic']['outer_ring_share_val_nn']:.0%} (nearest neighbour), "
                     f"{by_candidate['_diagnostic']['outer_ring_share_val_default']:.0%} (default, in-sample)")
        for name in names:
            m = by_candidate[name]
            pixel = f"{m['pixel_auroc']:.4f}" if m["pixel_auroc"] is not None else "n/a"
            lines.append(f"  {name:<58} {m['image_auroc']:.4f} / {pixel}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main, get_args_parser())
