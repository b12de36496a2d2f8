"""Good-only anomaly detection on one MVTec AD category: a PatchCore-style detector learns from train/good alone,
scores and localises every test image, and is compared with a PaDiM-like Gaussian baseline (homework question 4).

Examples:
    python anomaly.py --demo --arch mobilenet_v2 --weights none          # synthetic data, nothing to download
    python anomaly.py --category bottle --data-root data/mvtec --arch mobilenet_v2 --weights mobilenet_v2.pth
    python anomaly.py --category bottle --arch wide_resnet50_2           # the paper's backbone (internet weights)
    python anomaly.py --category bottle --arch mobilenet_v2 --weights mobilenet_v2.pth --coreset-ratio 0.1 \\
        --sampler pruned_greedy                                           # exact greedy coreset, 10 %
    python anomaly.py --load results/detectors/anomaly_bottle_mobilenet_v2.pt --images new_photos/

Writes results/anomaly_<category>.json, results/figures/anomaly_<category>.png (heat maps) and
anomaly_<category>_hist.png (scores), and the fitted detector under results/detectors/.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from inspectkit.anomaly import GaussianBaseline, PatchCore, PatchCoreConfig
from inspectkit.anomaly.coreset import DEFAULT_SAMPLER, SAMPLERS
from inspectkit.anomaly.features import DEFAULT_LAYERS, default_layers
from inspectkit.anomaly.metrics import anomaly_metrics
from inspectkit.cache import DecodeCache
from inspectkit.cli import add_data_args, add_model_args, add_out_arg, data_root_of, resolve_category, run
from inspectkit.data import GOOD, IMAGE_SUFFIXES, Category, Sample
from inspectkit.errors import UserError
from inspectkit.models import check_arch, resolve_device
from inspectkit.results import ensure_writable_dir, provenance, sha256_file, write_json

DEFAULT_ARCH = "wide_resnet50_2"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    add_model_args(parser, arch_default=DEFAULT_ARCH)
    group = parser.add_argument_group("detector")
    group.add_argument("--image-size", type=int, default=224, help="square size images are resized to (default: 224)")
    group.add_argument("--coreset-ratio", type=float, default=0.01,
                       help="share of the good patches kept in the memory bank, in (0, 1] (default: 0.01)")
    group.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=list(SAMPLERS),
                       help=f"coreset sampler (default: {DEFAULT_SAMPLER}: exact greedy k-center on a random "
                            "tenfold oversample; greedy and pruned_greedy are exact, random is for comparison)")
    layer_defaults = "; ".join(f"{arch}: {','.join(layers)}" for arch, layers in DEFAULT_LAYERS.items())
    group.add_argument("--layers", default=None,
                       help="comma-separated backbone stages (torchvision graph node names), e.g. layer2,layer3 "
                            f"(default per --arch: {layer_defaults})")
    group.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed for the coreset and the random projection (default: 0)")
    group.add_argument("--no-baseline", action="store_true", help="skip the Gaussian (PaDiM-like) baseline")
    group.add_argument("--no-figures", action="store_true", help="skip the heat-map strip and the histogram")
    scoring = parser.add_argument_group("score new images with a saved detector")
    scoring.add_argument("--load", default=None, metavar="FILE",
                         help="a detector file written by an earlier run (under <out>/detectors/)")
    scoring.add_argument("--images", default=None, metavar="DIR",
                         help="with --load: score every image in DIR and write <out>/anomaly_scores_<DIR name>.json")
    add_out_arg(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    if args.load or args.images:
        return score_folder(args)
    start = time.perf_counter()
    config = check_args(args)
    timings: dict[str, float] = {}
    category = resolve_category(args)
    timings["category"] = time.perf_counter() - start  # finding and validating the files (cached between runs)
    test = check_test_set(category)
    train = category.split_samples("train")
    out = ensure_writable_dir(args.out)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    tick = time.perf_counter()
    detector = PatchCore.build(config, args.weights, device)
    timings["model"] = time.perf_counter() - tick  # first: a weights problem fails before any decoding
    tick = time.perf_counter()
    cache = DecodeCache()
    train_images = decode_images(cache, [s.path for s in train], config.image_size)
    test_images = decode_images(cache, [s.path for s in test], config.image_size)
    has_masks = np.array([s.mask_path is not None or not s.is_defect for s in test])
    masks = np.stack([cache.mask(s.mask_path, config.image_size) for s in test])
    timings["decode"] = time.perf_counter() - tick
    decoded_now = cache.decoded

    tick = time.perf_counter()
    train_features = detector.extract(train_images, "features (train)")
    test_features = detector.extract(test_images, "features (test)")
    timings["features"] = time.perf_counter() - tick
    tick = time.perf_counter()
    detector.fit_features(train_features)
    timings["coreset"] = time.perf_counter() - tick
    tick = time.perf_counter()
    scores, maps = detector.score_features(test_features)
    timings["scoring"] = time.perf_counter() - tick
    tick = time.perf_counter()
    classes = [s.label for s in test]
    pixel_ok = category.has_ground_truth and has_masks.any()
    metrics = compute_metrics(classes, scores, masks, maps, has_masks, pixel_ok)
    timings["metrics"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    detector.threshold = metrics["threshold"]

    baseline = None
    if not args.no_baseline:
        tick = time.perf_counter()
        gaussian = GaussianBaseline(config.image_size, config.sigma).fit(train_features)
        base_scores, base_maps = gaussian.score_features(test_features)
        baseline = {"method": "PaDiM-like Gaussian per patch position (Mahalanobis), same features, "
                              f"covariance + {gaussian.epsilon} I",
                    **compute_metrics(classes, base_scores, masks, base_maps, has_masks, pixel_ok)}
        timings["baseline"] = time.perf_counter() - tick

    detector_file = detector.save(out / "detectors" / f"anomaly_{category.name}_{config.arch}.pt")
    figures = []
    if not args.no_figures:
        tick = time.perf_counter()
        figures = make_figures(category.name, out, test, test_images, maps, masks, scores, metrics["threshold"])
        timings["figures"] = time.perf_counter() - tick

    notes = []
    if not pixel_ok:
        notes.append("no ground_truth masks for this category: image metrics only")
    elif not has_masks.all():
        notes.append(f"{int((~has_masks).sum())} defective test image(s) without a mask are left out of the pixel "
                     "metrics")
    notes.append(f"timings: decode was {'cold' if decoded_now else 'warm'} ({decoded_now} files decoded now, the "
                 "rest read from the decode cache); total_s covers category (finding and validating the files), model, "
                 "decode, features, coreset, scoring and metrics, not the baseline or figures, nor Python's start")
    result = {
        "category": category.name,
        "class_names": category.class_names,
        "counts": category.counts(),
        "metrics": metrics,
        "baseline": baseline,
        "config": {**vars_config(config), "weights": args.weights, "device": str(device),
                   "pixel_metrics_resolution": config.image_size, "threads": torch.get_num_threads()},
        "memory_bank": {"patches_before_coreset": detector.bank_size_before_coreset,
                        "coreset_size": len(detector.bank), "feature_dim": int(detector.bank.shape[1]),
                        "grid": list(train_features.shape[-2:]), "coreset_radius_of_sampled_points":
                            detector.coreset_radius},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "detector_file": str(detector_file),
        "figures": [str(p) for p in figures],
        "notes": notes,
        "provenance": provenance(seed=args.seed, weights=detector.weights, data_root=data_root_of(category),
                                 demo=category.demo),
    }
    path = write_json(out / f"anomaly_{category.name}.json", result)
    print_summary(path, result)
    return result


def check_args(args: argparse.Namespace) -> PatchCoreConfig:
    """Validate the detector flags once, here at the boundary."""
    check_arch(args.arch)
    if args.layers is None:
        default_layers(args.arch)  # a UserError for a backbone without chosen stages
    if not 0 < args.coreset_ratio <= 1:
        raise UserError(f"--coreset-ratio must be in (0, 1], e.g. 0.01 for 1 %; got {args.coreset_ratio}")
    if args.image_size < 32:
        raise UserError(f"--image-size must be at least 32 pixels; got {args.image_size}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {args.batch_size}")
    layers = tuple(name.strip() for name in args.layers.split(",") if name.strip()) if args.layers else ()
    return PatchCoreConfig(arch=args.arch, layers=layers, image_size=args.image_size,
                           coreset_ratio=args.coreset_ratio, sampler=args.sampler, batch_size=args.batch_size,
                           seed=args.seed)


def vars_config(config: PatchCoreConfig) -> dict:
    from dataclasses import asdict

    return {**asdict(config), "layers": list(config.layers)}


def check_test_set(category: Category) -> list[Sample]:
    """The test samples, if they hold both good and defective images (AUROC needs both)."""
    test = category.split_samples("test")
    labels = {s.label for s in test}
    if labels == {GOOD} or not labels:
        raise UserError(f"category '{category.name}' has no defective test images (only test/good), so there is "
                        "nothing to detect and no AUROC; add test/<defect>/ folders")
    if GOOD not in labels:
        raise UserError(f"category '{category.name}' has no good test images (test/good), so AUROC is undefined; "
                        "add some defect-free test images")
    return test


def decode_images(cache: DecodeCache, paths: list[Path], size: int) -> torch.Tensor:
    """Decode (or read from the cache) and stack images as uint8 (N, 3, size, size), on all cores."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(lambda p: cache.image(p, size), paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def compute_metrics(classes: list[str], scores: np.ndarray, masks: np.ndarray, maps: np.ndarray,
                    has_masks: np.ndarray, pixel_ok: bool) -> dict:
    if pixel_ok:
        return anomaly_metrics(classes, scores, masks[has_masks], maps[has_masks])
    return anomaly_metrics(classes, scores)


def make_figures(name: str, out: Path, test: list[Sample], images: torch.Tensor, maps: np.ndarray,
                 masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[Path]:
    from inspectkit.figures.anomaly import heatmap_strip, score_histogram

    shown = []
    for label in dict.fromkeys(s.label for s in test):  # one image per class, good first, in folder order
        shown.append(next(i for i, s in enumerate(test) if s.label == label))
    shown.sort(key=lambda i: test[i].label != GOOD)
    strip = heatmap_strip(
        [images[i].permute(1, 2, 0).numpy() for i in shown], [maps[i] for i in shown],
        [masks[i] for i in shown], [f"{test[i].label}\nscore {scores[i]:.3g}" for i in shown],
        out / "figures" / f"anomaly_{name}.png", vmin=float(np.median(maps)), vmax=float(maps[shown].max()),
        threshold=threshold)
    hist = score_histogram(scores, np.array([s.is_defect for s in test]), out / "figures" / f"anomaly_{name}_hist.png",
                           f"{name}: image scores (PatchCore)", threshold)
    return [strip, hist]


def score_folder(args: argparse.Namespace) -> dict:
    """``--load FILE --images DIR``: score every image in DIR with a saved detector."""
    if not (args.load and args.images):
        raise UserError("--load FILE and --images DIR go together: score the images in DIR with the detector FILE")
    detector = PatchCore.load(args.load, resolve_device(args.device))
    folder = Path(args.images).expanduser()
    if not folder.is_dir():
        raise UserError(f"--images {folder} is not a folder; pass a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not paths:
        raise UserError(f"--images {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out = ensure_writable_dir(args.out)
    cache = DecodeCache()
    images, kept, skipped = [], [], []
    for path in paths:
        try:
            images.append(cache.image(path, detector.config.image_size))
            kept.append(path)
        except (OSError, ValueError, SyntaxError):
            skipped.append(path.name)
    if not kept:
        raise UserError(f"no image in {folder} could be decoded")
    scores, _ = detector.score(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous())
    threshold = detector.threshold
    rows = [{"file": p.name, "score": float(s), "anomalous": None if threshold is None else bool(s >= threshold)}
            for p, s in zip(kept, scores, strict=True)]
    result = {
        "images": str(folder),
        "detector_file": str(Path(args.load)),
        "detector_sha256": sha256_file(args.load),
        "threshold": threshold,
        "threshold_note": "the F1-optimal image threshold on the test set the detector was evaluated on",
        "config": vars_config(detector.config),
        "scores": rows,
        "skipped_files": skipped,
        "provenance": provenance(seed=detector.config.seed, weights=detector.weights, data_root=str(folder)),
    }
    path = write_json(out / f"anomaly_scores_{folder.resolve().name}.json", result)
    flagged = sum(bool(r["anomalous"]) for r in rows)
    print(f"scored {len(rows)} images ({flagged} above the threshold {threshold}); wrote {path}")
    return result


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux and macOS report it in different units)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def print_summary(path: Path, result: dict) -> None:
    m, t = result["metrics"], result["timings"]
    pixel = f"{m['pixel_auroc']:.4f}" if m["pixel_auroc"] is not None else "n/a"
    pro = f"{m['pro']:.4f}" if m["pro"] is not None else "n/a"
    print(f"{result['category']}: image AUROC {m['image_auroc']:.4f}, pixel AUROC {pixel}, PRO {pro}, "
          f"F1 max {m['f1_max']:.3f}")
    if result["baseline"]:
        b = result["baseline"]
        bp = f"{b['pixel_auroc']:.4f}" if b["pixel_auroc"] is not None else "n/a"
        print(f"baseline (Gaussian): image AUROC {b['image_auroc']:.4f}, pixel AUROC {bp}")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total_s")
    print(f"total {t['total_s']:.1f}s ({phases}); peak memory {result['peak_rss_mb']:.0f} MB; wrote {path}")


if __name__ == "__main__":
    run(main, get_args_parser())
