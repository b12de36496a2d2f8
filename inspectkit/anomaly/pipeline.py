"""The fit-score-measure pipeline of one category, as one call: ``run_detection`` streams the good images through
the detector (and the Gaussian baseline), scores the test set, measures it, and returns the results record;
``write_record`` writes it with its provenance. ``anomaly.py``, its ``--category all`` mode and ``bench/`` all call it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..allocator import fixed_mmap_threshold
from ..anomaly_results import SUMMARY_NAME, failed_rows, write_summary
from ..cache import DecodeCache
from ..data import GOOD, Category, Sample
from ..errors import UserError
from ..results import provenance, write_json
from .baseline import GaussianBaseline
from .config import PatchCoreConfig
from .memory import PeakMemory
from .metrics import anomaly_metrics
from .patchcore import PatchCore
from .threshold import rates_at_threshold, split_validation

BASELINE_METHOD = "PaDiM-like Gaussian per patch position (Mahalanobis), same features, covariance + {eps} I"


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


def train_sizes(category: Category, train: list[Sample]) -> list[tuple[int, int]]:
    """The native (width, height) of the training images, for ``PatchCoreConfig.detector_shape``: from the data
    check, or (an unvalidated category) from each file."""
    sizes = []
    for sample in train:
        info = category.image_info.get(sample.path)
        if info is None:  # an unvalidated category: open each file for its size
            from ..imageio import open_image

            with open_image(sample.path) as img:
                sizes.append(img.size)
        else:
            sizes.append((info.width, info.height))
    return sizes


def decode_batches(cache: DecodeCache, samples: list[Sample], shape: tuple[int, int], batch_size: int,
                   pool: ThreadPoolExecutor) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches of ``samples`` at ``shape``, decoded (or read from the cache) on all cores."""
    for start in range(0, len(samples), batch_size):
        arrays = list(pool.map(lambda s: cache.image(s.path, shape), samples[start:start + batch_size]))
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class _Clock:
    """Seconds spent per phase, summed over the interleaved steps of a streamed run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._tick = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._tick
        self._tick = now


def run_detection(category: Category, config: PatchCoreConfig, weights: str, *, device: torch.device | str = "cpu",
                  baseline: bool = True, out: Path | None = None, figures: bool = True, progress: bool = True,
                  category_s: float = 0.0, runtime: str = "auto") -> tuple[dict, PatchCore]:
    """Fit on ``train/good``, score ``test/``, measure; returns the results record (no provenance) and the
    fitted detector. With ``out``, the detector file and (with ``figures``) the figures are written under it.
    ``category_s``, the caller's time for finding and checking the category, counts in the total. ``runtime``
    runs the feature extractor (runtime.py)."""
    fixed_mmap_threshold()
    with PeakMemory() as peak:
        record, detector = _run(category, config, weights, torch.device(device), baseline, out, figures, progress,
                                runtime)
    record["peak_rss_mb"] = round(peak.mb, 1)
    timings = record["timings"]
    timings["category"] = round(category_s, 3)
    timings["total_s"] = round(timings["total_s"] + category_s, 3)
    timings["wall_s"] = round(timings["wall_s"] + category_s, 3)
    return record, detector


def write_record(out: Path, record: dict, weights: dict, category: Category,
                 command: Sequence[str] | None = None, refresh_summary: bool = True) -> Path:
    """Add the provenance block to a category's record and write ``<out>/anomaly_<category>.json``; with
    ``refresh_summary``, a summary already in ``out`` is derived again from the per-category files, so that it
    never keeps a number that this category's file no longer has."""
    record["provenance"] = provenance(seed=record["config"]["seed"], weights=weights, data_root=category.root.parent,
                                      demo=category.demo, command=command)
    path = write_json(out / f"anomaly_{category.name}.json", record)
    if refresh_summary and (out / SUMMARY_NAME).is_file():
        write_summary(out, record["provenance"], failed_rows(out))
    return path


def summary_text(record: dict, path: Path) -> str:
    """What anomaly.py prints for a category's record written to ``path``: the metrics, the baseline's, the time."""
    m, t = record["metrics"], record["timings"]
    pixel = f"{m['pixel_auroc']:.4f}" if m["pixel_auroc"] is not None else "n/a"
    pro = f"{m['pro']:.4f}" if m["pro"] is not None else "n/a"
    lines = [f"{record['category']}: image AUROC {m['image_auroc']:.4f}, pixel AUROC {pixel}, PRO {pro}, "
             f"F1 max {m['f1_max']:.3f} (input {'x'.join(map(str, record['config']['input_shape']))})"]
    if record["baseline"]:
        b = record["baseline"]
        bp = f"{b['pixel_auroc']:.4f}" if b["pixel_auroc"] is not None else "n/a"
        lines.append(f"baseline (Gaussian): image AUROC {b['image_auroc']:.4f}, pixel AUROC {bp}")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total_s")
    lines.append(f"total {t['total_s']:.1f}s ({phases}); peak memory {record['peak_rss_mb']:.0f} MB; wrote {path}")
    return "\n".join(lines)


def _run(category: Category, config: PatchCoreConfig, weights: str, device: torch.device, with_baseline: bool,
         out: Path | None, figures: bool, progress: bool, runtime: str) -> tuple[dict, PatchCore]:
    start = time.perf_counter()
    clock = _Clock()
    test = check_test_set(category)
    good_train = category.split_samples("train")
    train, validation = split_validation(good_train, config.validation_share, config.seed)
    if not validation:
        raise UserError(f"category '{category.name}' has {len(good_train)} train/good image(s): at least 2 are "
                        "needed, one to fit on and one to set the threshold")
    detector = PatchCore.build(config, weights, device, runtime)
    clock.lap("model")
    shape = config.detector_shape(train_sizes(category, good_train))
    cache = DecodeCache(memory=False)  # each image is read once per run: keep nothing but the current batch
    gaussian = (GaussianBaseline(shape, config.sigma, score_sigma=config.score_sigma, cores=detector.cores)
                if with_baseline else None)
    detector.begin_fit(len(train), shape)
    clock.lap("model")
    feature_runtime = detector.features.prepare(shape)  # the cached ONNX graph, or its export on a first run
    clock.lap("graph")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        bar = tqdm(total=len(good_train) + len(test), desc=f"{category.name}: fit", unit="img", disable=not progress,
                   leave=False)

        def features_of(samples: list[Sample]) -> Iterator[torch.Tensor]:
            """Each batch's patch features: decoded on all cores, through the backbone, timed, counted."""
            for batch in decode_batches(cache, samples, shape, config.batch_size, pool):
                clock.lap("decode")
                features = detector.extract(batch)
                clock.lap("features")
                yield features
                bar.update(len(batch))

        for features in features_of(train):
            detector.add_good(features)
            clock.lap("coreset")
            if gaussian is not None:
                gaussian.update(features)
                clock.lap("baseline")
        detector.finish_fit()
        clock.lap("coreset")
        if gaussian is not None:
            gaussian.finish()
            clock.lap("baseline")
        bar.set_description(f"{category.name}: validation")
        val_grids = []
        for features in features_of(validation):
            val_grids.append(detector.patch_scores(features))
            clock.lap("scoring")
        detector.calibrate(torch.cat(val_grids))
        del val_grids
        clock.lap("threshold")
        bar.set_description(f"{category.name}: score")
        grids, base_grids = [], []
        for features in features_of(test):
            grids.append(detector.patch_scores(features))
            clock.lap("scoring")
            if gaussian is not None:
                base_grids.append(gaussian.patch_scores(features))
                clock.lap("baseline")
        bar.close()
        masks = np.stack(list(pool.map(lambda s: cache.mask(s.mask_path, shape), test)))
    clock.lap("decode")
    decoded_now = cache.decoded

    distances = torch.cat(grids)
    scores, maps = detector.image_scores(detector.scored_grids(distances)), detector.maps(detector.map_grids(distances))
    clock.lap("scoring")
    classes = [s.label for s in test]
    has_masks = np.array([s.mask_path is not None or not s.is_defect for s in test])
    pixel_ok = category.has_ground_truth and bool(has_masks.any())
    metrics = _metrics(classes, scores, masks, maps, has_masks, pixel_ok)
    metrics = {**metrics, **_threshold_metrics(detector, classes, scores, masks, maps, has_masks, pixel_ok),
               "oracle": {"f1_max": metrics.pop("f1_max"), "threshold": metrics.pop("threshold"),
                          "note": "the F1-optimal threshold on the test set itself: it uses the test labels, which "
                                  "a good-only user does not have; for reference only, not used for any verdict"}}
    clock.lap("metrics")

    baseline = None
    if gaussian is not None:
        base_patch = torch.cat(base_grids)
        base_scores, base_maps = gaussian.image_scores(base_patch), gaussian.maps(base_patch)
        baseline = {"method": BASELINE_METHOD.format(eps=gaussian.epsilon),
                    **_metrics(classes, base_scores, masks, base_maps, has_masks, pixel_ok)}
        del base_maps
        clock.lap("baseline")

    detector_file, figure_files = None, []
    if out is not None:
        detector_file = detector.save(out / "detectors" / f"anomaly_{category.name}_{config.arch}.pt")
        if figures:
            figure_files = _figures(category.name, out, test, cache, shape, maps, masks, scores, detector)
        clock.lap("output")
    timings = {k: round(v, 3) for k, v in clock.seconds.items()}
    timings["wall_s"] = round(time.perf_counter() - start, 3)
    timings["total_s"] = round(sum(v for k, v in clock.seconds.items() if k not in ("baseline", "output")), 3)

    notes = []
    if not pixel_ok:
        notes.append("no ground_truth masks for this category: image metrics only")
    elif not has_masks.all():
        notes.append(f"{int((~has_masks).sum())} defective test image(s) without a mask are left out of the pixel "
                     "metrics")
    notes.append(f"timings: the detector decoded {decoded_now} files itself and read the rest from the decode "
                 "cache (a category's first check stores each image there at this input shape as it decodes it); "
                 "total_s is the detector end to end: finding and checking the category, model, graph (the feature "
                 "extractor's ONNX graph, loaded or exported), decode, features, coreset, scoring, metrics; wall_s "
                 "adds the baseline and writing the detector file and figures")
    record = {
        "category": category.name,
        "class_names": category.class_names,
        "counts": category.counts(),
        "train_good_used": {"fit": len(train), "validation": len(validation),
                            "note": f"a seeded {config.validation_share:.0%} of train/good (seed {config.seed}) "
                                    "was held out of the memory bank to set the thresholds"},
        "metrics": metrics,
        "baseline": baseline,
        "config": {**config.as_dict(), "weights": weights, "device": str(device), "input_shape": list(shape),
                   "pixel_metrics_resolution": list(shape), "threads": torch.get_num_threads(),
                   "feature_runtime": feature_runtime.split(" (")[0]},  # the setting; its graph: feature_graph
        "memory_bank": {"patches_before_coreset": detector.bank_size_before_coreset, "pool_size": detector.pool_size,
                        "coreset_size": len(detector.bank), "feature_dim": int(detector.bank.shape[1]),
                        "grid": list(distances.shape[-2:]),
                        "coreset_radius_of_sampled_points": detector.coreset_radius},
        "position": detector.position,
        "feature_graph": feature_runtime,  # e.g. "onnxruntime (cache)": run-to-run detail, not a setting
        "timings": timings,
        "detector_file": str(detector_file) if detector_file else None,
        "figures": [str(p) for p in figure_files],
        "notes": notes,
    }
    return record, detector


def _threshold_metrics(detector: PatchCore, classes: list[str], scores: np.ndarray, masks: np.ndarray,
                       maps: np.ndarray, has_masks: np.ndarray, pixel_ok: bool) -> dict:
    """The test set's rates at the good-only thresholds: images, and pixels where there are masks."""
    labels = np.array([c != GOOD for c in classes])
    pixel = None
    if pixel_ok:
        pixel = rates_at_threshold(_masked(masks, has_masks), _masked(maps, has_masks), detector.pixel_threshold)
    return {"threshold": {**detector.threshold_info, "image_threshold": detector.image_threshold,
                          "pixel_threshold": detector.pixel_threshold},
            "at_threshold": {"image": rates_at_threshold(labels, scores, detector.image_threshold), "pixel": pixel}}


def _metrics(classes: list[str], scores: np.ndarray, masks: np.ndarray, maps: np.ndarray, has_masks: np.ndarray,
             pixel_ok: bool) -> dict:
    if pixel_ok:
        return anomaly_metrics(classes, scores, _masked(masks, has_masks), _masked(maps, has_masks))
    return anomaly_metrics(classes, scores)


def _masked(array: np.ndarray, has_masks: np.ndarray) -> np.ndarray:
    """The images with a mask: ``array`` itself when all have one (no copy of 10^8 pixels), else a copy."""
    return array if has_masks.all() else array[has_masks]


def _figures(name: str, out: Path, test: list[Sample], cache: DecodeCache, shape: tuple[int, int], maps: np.ndarray,
             masks: np.ndarray, scores: np.ndarray, detector: PatchCore) -> list[Path]:
    """The heat-map strip (one image per class), the score histogram, and the gallery of every test image."""
    from ..figures.anomaly import heatmap_strip, score_histogram
    from .gallery import GalleryItem, write_gallery

    threshold = detector.image_threshold
    shown = []
    for label in dict.fromkeys(s.label for s in test):  # one image per class, good first, in folder order
        shown.append(next(i for i, s in enumerate(test) if s.label == label))
    shown.sort(key=lambda i: test[i].label != GOOD)
    strip = heatmap_strip(
        [cache.image(test[i].path, shape) for i in shown], [maps[i] for i in shown],
        [masks[i] for i in shown], [f"{test[i].label}\nscore {scores[i]:.3g}" for i in shown],
        out / "figures" / f"anomaly_{name}.png", vmin=float(np.median(maps)), vmax=float(maps[shown].max()),
        threshold=threshold)
    hist = score_histogram(scores, np.array([s.is_defect for s in test]), out / "figures" / f"anomaly_{name}_hist.png",
                           f"{name}: image scores (PatchCore)", threshold)
    root = test[0].path.parents[2]  # <category>/test/<class>/<file>
    items = [GalleryItem(file=s.path.relative_to(root).as_posix(), label=s.label, score=float(scores[i]),
                         image=cache.image(s.path, shape), anomaly_map=maps[i],
                         mask=masks[i] if s.mask_path is not None else None) for i, s in enumerate(test)]
    info = detector.threshold_info
    gallery = write_gallery(
        out / f"anomaly_{name}.html", category=name, items=items, threshold=threshold,
        threshold_note=f"set from {info['validation_images']} good images held out of train/good at a "
                       f"{info['false_alarm_target']:.0%} false-alarm target (no defect labels used)",
        vmin=float(np.median(maps)), vmax=float(np.percentile(maps, 99.9)))
    return [strip, hist, gallery]
