"""inspectkit.anomaly.metrics: AUROCs equal scikit-learn's, PRO matches a case worked out by hand, F1 threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from inspectkit.anomaly.metrics import (
    CELL_STEPS,
    CELLS_PER_EDGE,
    PixelCurves,
    anomaly_metrics,
    f1_optimal_threshold,
    image_auroc,
    per_defect_image_auroc,
    pixel_auroc,
    pro_score,
)


def test_aurocs_equal_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = rng.normal(size=40) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    masks = rng.random((5, 16, 16)) > 0.8
    maps = rng.random((5, 16, 16)) + masks * 0.3
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pro_on_a_hand_made_case():
    """Two images of 1x4 pixels; image 0 holds region A (pixels 0-1), image 1 region B (pixel 0).

    Scores: A = 0.9, 0.5; B = 0.7; negatives (5 pixels) = 0.8, 0.6, 0.4, 0.3, 0.2. Lowering the threshold:
    0.9 -> FPR 0,   PRO (1/2 + 0)/2 = 0.25;   0.8 -> FPR 0.2, PRO 0.25;   0.7 -> FPR 0.2, PRO (0.5 + 1)/2 = 0.75;
    0.6 -> FPR 0.4 (past the 0.3 limit: interpolate between (0.2, 0.75) and (0.4, 0.75) -> 0.75 at 0.3).
    Area up to 0.3: from (0,0) to (0,0.25) nothing, (0,0.25)-(0.2,0.25): 0.05, the vertical step at 0.2: nothing,
    (0.2,0.75)-(0.3,0.75): 0.075. Total 0.125; normalised by 0.3: 0.41666...
    """
    masks = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.8, 0.6]], [[0.7, 0.4, 0.3, 0.2]]])
    assert pro_score(masks, maps) == pytest.approx(0.125 / 0.3, abs=1e-12)


def test_pro_is_one_for_a_perfect_map_and_uses_connected_regions():
    masks = np.zeros((2, 12, 12), dtype=bool)
    masks[0, 1:3, 1:3] = True  # two regions in image 0, one in image 1
    masks[0, 8:11, 8:11] = True
    masks[1, 4:6, 4:9] = True
    perfect = np.where(masks, 1.0, 0.5)
    assert pro_score(masks, perfect) == pytest.approx(1.0)
    # Scoring one region below every defect-free pixel costs a third of the PRO, whatever the region's size:
    # regions count equally (the first region has 4 pixels, the others 9 and 10).
    partial = perfect.copy()
    partial[0, 1:3, 1:3] = 0.0
    assert pro_score(masks, partial) == pytest.approx(2 / 3)


def test_f1_optimal_threshold_is_the_best_cut():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 30)
    scores = rng.normal(size=30) + 1.5 * labels
    f1_max, threshold = f1_optimal_threshold(labels, scores)
    brute = max(f1_score(labels, scores >= t) for t in scores)
    assert f1_max == pytest.approx(brute)
    assert f1_score(labels, scores >= threshold) == pytest.approx(f1_max)


def test_per_defect_auroc_and_image_only_metrics():
    classes = ["good", "good", "crack", "crack", "hole", "hole"]
    scores = np.array([0.1, 0.4, 0.9, 0.3, 0.8, 0.7])
    per_defect = per_defect_image_auroc(classes, scores)
    assert per_defect == {"crack": pytest.approx(roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.9, 0.3])),
                          "hole": 1.0}
    result = anomaly_metrics(classes, scores)
    assert result["pixel_auroc"] is None and result["pro"] is None
    assert set(result) == {"image_auroc", "pixel_auroc", "pro", "f1_max", "threshold", "per_defect_image_auroc"}


def _pro_by_thresholds(masks, maps, limit):
    """PRO the slow, obvious way: every distinct score as a threshold, over every pixel."""
    from scipy import ndimage

    regions = [r for mask in masks for r in _regions(ndimage, mask)]
    index = [i for i, mask in enumerate(masks) for _ in _regions(ndimage, mask)]
    negative = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append(float((maps[negative] >= t).mean()))
        pros.append(float(np.mean([(maps[i][r] >= t).mean() for i, r in zip(index, regions, strict=True)])))
    fprs, pros = np.array(fprs), np.array(pros)
    y_end = np.interp(limit, fprs, pros)
    inside = fprs <= limit
    return float(np.trapezoid(np.r_[pros[inside], y_end], np.r_[fprs[inside], limit]) / limit)


def _regions(ndimage, mask):
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    return [labelled == k for k in range(1, count + 1)]


@pytest.mark.parametrize("limit", [0.3, 0.05])
def test_pro_equals_the_threshold_by_threshold_definition(limit):
    rng = np.random.default_rng(4)
    masks = np.zeros((6, 24, 24), bool)
    masks[0, 3:8, 3:9] = masks[0, 15:20, 15:18] = masks[2, 10:14, 4:20] = masks[4, 1:3, 1:3] = True
    maps = np.round(rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape), 2).astype(np.float32)  # ties
    assert pro_score(masks, maps, limit) == pytest.approx(_pro_by_thresholds(masks, maps, limit), abs=1e-9)


def _blobs(rng, n, size):
    masks = np.zeros((n, size, size), bool)
    for mask in masks[::2]:  # half the images hold one or two defect regions
        for _ in range(rng.integers(1, 3)):
            y, x, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(2, 6)
            mask[max(0, y - r):y + r, max(0, x - r):x + r] = True
    return masks


def test_binned_pixel_auroc_agrees_with_scikit_learn_when_values_outnumber_the_bins():
    rng = np.random.default_rng(7)
    masks = _blobs(rng, 40, 64)
    maps = (rng.normal(size=masks.shape) + 1.2 * masks).astype(np.float32)  # 163,840 distinct values
    assert len(np.unique(maps)) > 4 * len(PixelCurves.thresholds(maps))  # really binned, not exact by accident
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-3)
    coarse = PixelCurves(PixelCurves.thresholds(maps, bins=16))
    for mask, anomaly_map in zip(masks, maps, strict=True):
        coarse.add(mask, anomaly_map)
    assert abs(coarse.auroc() - roc_auc_score(masks.ravel(), maps.ravel())) > 1e-3  # the check can fail


def test_binned_pro_agrees_with_the_threshold_by_threshold_definition():
    rng = np.random.default_rng(8)
    masks = _blobs(rng, 6, 24)
    maps = (rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)).astype(np.float32)
    curves = PixelCurves(PixelCurves.thresholds(maps, bins=512))  # 3,456 distinct values in 512 bins
    for mask, anomaly_map in zip(masks, maps, strict=True):
        curves.add(mask, anomaly_map)
    assert len(curves.edges) == 512
    assert curves.pro() == pytest.approx(_pro_by_thresholds(masks, maps, 0.3), abs=1e-3)


@pytest.mark.parametrize("kind", ["normal", "heavy tails", "ties and edges", "one value"])
def test_the_cell_lookup_finds_the_bins_a_binary_search_finds(kind):
    """Each value's bin from its cell and its own cell's few edges equals np.searchsorted's, also for values on an
    edge, below or above every edge, and where crowded cells fall back to the search."""
    rng = np.random.default_rng(10)
    values = {"normal": rng.normal(size=50_000),
              "heavy tails": rng.standard_cauchy(50_000),  # the range is huge: most cells near the middle crowd
              "ties and edges": rng.integers(0, 40, 50_000) / 7,
              "one value": np.full(1000, 2.5)}[kind].astype(np.float32)
    curves = PixelCurves(PixelCurves.thresholds(values, bins=2048))
    probes = np.r_[values, curves.edges, np.nextafter(curves.edges, np.float32(-np.inf)),
                   curves.edges[0] - 1, curves.edges[-1] + 1].astype(np.float32)
    assert np.array_equal(curves.bins(probes), np.searchsorted(curves.edges, probes, side="right") - 1)
    if kind == "heavy tails":
        assert curves._inside.max() > CELL_STEPS  # the fallback really ran


def test_the_curves_keep_histograms_only_whatever_the_number_of_images():
    rng = np.random.default_rng(9)
    small, large = (PixelCurves.measure(_blobs(rng, n, 32), rng.random((n, 32, 32)).astype(np.float32))
                    for n in (10, 200))
    for curves in (small, large):
        arrays = [v for v in vars(curves).values() if isinstance(v, np.ndarray)]
        # one entry per bin, or per cell of the bin lookup (CELLS_PER_EDGE per bin), nothing else
        assert all(a.ndim == 1 and len(a) in (len(curves.edges), CELLS_PER_EDGE * len(curves.edges)) for a in arrays)
    assert len(large.edges) <= len(PixelCurves.thresholds(rng.random(10**6).astype(np.float32)))
