"""Anomaly metrics: image and pixel AUROC (scikit-learn), PRO up to an FPR limit (MVTec AD), the F1-optimal
threshold, and image AUROC per defect type.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

PRO_FPR_LIMIT = 0.3


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of image scores; ``labels`` are 1 for defective images."""
    return float(roc_auc_score(np.asarray(labels, dtype=int), np.asarray(scores, dtype=np.float64)))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """ROC AUC over every pixel of every image (masks bool (N, H, W), maps float of the same shape).

    The area under scikit-learn's ``roc_curve``: the same number as ``roc_auc_score``, which spends a third more
    time on input checks that 10^7 pixels make slow (a ``np.unique`` of the labels)."""
    fpr, tpr, _ = roc_curve(np.asarray(masks, dtype=bool).ravel(), np.asarray(maps, dtype=np.float32).ravel())
    return float(auc(fpr, tpr))


def f1_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(f1_max, threshold)``: the image-score threshold (score >= threshold is a defect) with the best F1."""
    precision, recall, thresholds = precision_recall_curve(np.asarray(labels, dtype=int), scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def per_defect_image_auroc(classes: list[str], scores: np.ndarray, good: str = "good") -> dict[str, float]:
    """Image AUROC of the good test images against each defect type alone."""
    classes_arr = np.asarray(classes)
    scores = np.asarray(scores)
    out = {}
    for defect in sorted(set(classes) - {good}):
        keep = (classes_arr == good) | (classes_arr == defect)
        out[defect] = image_auroc(classes_arr[keep] == defect, scores[keep])
    return out


def pro_score(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Normalised area under the per-region-overlap curve for FPR in [0, fpr_limit] (Bergmann et al., MVTec AD).

    Each connected defect region (8-connectivity) counts equally: at a threshold, its overlap is the share of its
    pixels at or above it; the PRO is the mean overlap over all regions. The false-positive rate is over all
    defect-free pixels of all images. The curve is evaluated at every distinct score (exact, no threshold grid),
    integrated with the trapezoid rule up to ``fpr_limit`` (interpolated there) and divided by ``fpr_limit``.
    """
    masks = np.asarray(masks, dtype=bool)
    maps = np.asarray(maps)  # keep float32 maps as they are: sorting them is half the work
    regions = np.zeros(masks.shape, dtype=np.int32)  # int32 and few temporaries: maps reach 10^7-10^8 pixels
    n_regions = 0
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        regions[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    if n_regions == 0:
        raise ValueError("PRO needs at least one defect region")
    flat_regions, flat_maps = regions.ravel(), maps.ravel()
    sizes = np.bincount(flat_regions, minlength=n_regions + 1)
    n_negative = int(sizes[0])
    # The curve is needed only down to the threshold where the FPR passes the limit: keep the pixels at or above
    # the score of the first defect-free pixel beyond it (exact, and a fraction of the sort)
    beyond = min(n_negative, int(np.ceil(fpr_limit * n_negative)) + 1)
    negative_scores = flat_maps[flat_regions == 0]
    cut = np.partition(negative_scores, n_negative - beyond)[n_negative - beyond]
    del negative_scores
    kept = np.flatnonzero(flat_maps >= cut)
    order = kept[np.argsort(-flat_maps[kept])]  # ties need no order: they are merged below
    del kept
    region = flat_regions[order]
    scores = flat_maps[order]
    del order, regions
    # each pixel's contribution to the curve once the threshold drops to its score
    fpr = np.cumsum(region == 0) / n_negative
    pro = np.cumsum(np.where(region > 0, 1.0 / (n_regions * sizes[region].clip(min=1)), 0.0))
    del region
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # a threshold includes every pixel with an equal score
    fpr = np.r_[0.0, fpr[last_of_tie]]
    pro = np.r_[0.0, pro[last_of_tie]]
    inside = fpr <= fpr_limit
    x, y = fpr[inside], pro[inside]
    if x[-1] < fpr_limit and inside.sum() < len(fpr):
        nxt = int(np.flatnonzero(~inside)[0])
        y_end = pro[nxt - 1] + (pro[nxt] - pro[nxt - 1]) * (fpr_limit - fpr[nxt - 1]) / (fpr[nxt] - fpr[nxt - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, y_end]
    return float(np.trapezoid(y, x) / fpr_limit)


def anomaly_metrics(classes: list[str], scores: np.ndarray, masks: np.ndarray | None = None,
                    maps: np.ndarray | None = None, good: str = "good") -> dict:
    """Every metric the results JSON records; pixel metrics are ``None`` when ``masks`` is ``None``."""
    labels = np.asarray([c != good for c in classes], dtype=int)
    f1_max, threshold = f1_optimal_threshold(labels, scores)
    pixel_auc = pro = None
    if masks is not None and maps is not None and bool(np.asarray(masks).any()):
        # the two pixel metrics each sort millions of scores; numpy releases the GIL, so run them side by side
        with ThreadPoolExecutor(max_workers=2) as pool:
            pixel_job, pro_job = pool.submit(pixel_auroc, masks, maps), pool.submit(pro_score, masks, maps)
            pixel_auc, pro = pixel_job.result(), pro_job.result()
    return {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auc,
        "pro": pro,
        "f1_max": f1_max,
        "threshold": threshold,
        "per_defect_image_auroc": per_defect_image_auroc(classes, scores, good),
    }
