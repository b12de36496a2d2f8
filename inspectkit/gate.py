"""The anomaly gate of the anomaly-guided attempts: per split, a good-only PatchCore detector fitted on that
split's good training images, its image-score threshold tuned on the split's validation part, and the rule that
lets it decide good vs defect while the classifier names the defect type.

A classifier that has seen a dozen images of each defect type guesses "good vs defect"; the detector measures it
against hundreds of good images. No test image is used for any choice: the detector never sees validation or test
images while fitting, the threshold comes from the validation part alone, and the region model that names the
defect type learns from the training and validation parts' defective images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .anomaly import PatchCore, PatchCoreConfig
from .anomaly.features import DEFAULT_LAYERS
from .data import GOOD
from .errors import UserError


def check_gate_arch(arch: str) -> None:
    """The detector shares the classifier's backbone and weights file, so the arch must be one it supports."""
    if arch not in DEFAULT_LAYERS:
        raise UserError(f"the anomaly-guided attempts (3 and 4) need --arch {', '.join(DEFAULT_LAYERS)} (the anomaly "
                        f"detector's backbones); got '{arch}'. Run attempts 1-2 with it, or pick a supported arch")


def fit_gate(good_images: torch.Tensor, arch: str, weights: str, seed: int, device: torch.device) -> PatchCore:
    """A PatchCore detector (the toolkit's default configuration, unwhitened) fitted on ``good_images`` (N, 3, H, W)
    uint8. Nothing is held out: the split's labelled validation part sets the threshold instead. The whitening
    (anomaly/whitening.py) was chosen on the detector's own AUROCs, not on the classifier's attempts 3 and 4, whose
    committed results were made with unwhitened gates: it stays off here until it is measured there."""
    config = PatchCoreConfig(arch=arch, image_size=int(good_images.shape[-1]), seed=seed, validation_share=0.0,
                             whiten=0.0)
    return PatchCore.build(config, weights, device).fit(good_images)


def tune_threshold(scores: np.ndarray, is_defect: np.ndarray) -> dict:
    """The image-score threshold (score >= threshold is a defect) with the best balanced accuracy on validation
    images; among equally good thresholds, the middle of the widest gap between neighbouring scores, so that
    a separable validation set puts the threshold halfway between its highest good and lowest defect score."""
    scores = np.asarray(scores, dtype=np.float64)
    is_defect = np.asarray(is_defect, dtype=bool)
    if is_defect.all() or not is_defect.any():
        raise UserError("the validation part needs good and defective images to tune the anomaly gate")
    values = np.unique(scores)
    candidates = np.r_[values[0] - 1.0, (values[1:] + values[:-1]) / 2, values[-1] + 1.0]
    gaps = np.r_[np.inf, np.diff(values), np.inf]  # the width of the gap each candidate sits in
    recall = np.array([(scores[is_defect] >= t).mean() for t in candidates])
    specificity = np.array([(scores[~is_defect] < t).mean() for t in candidates])
    balanced = (recall + specificity) / 2
    best = np.flatnonzero(np.isclose(balanced, balanced.max()))
    widths = np.where(np.isfinite(gaps[best]), gaps[best], 0.0)  # an end of the range is no gap to sit in
    choice = int(best[np.argmax(widths)])
    return {"threshold": float(candidates[choice]), "val_balanced_accuracy": float(balanced[choice]),
            "val_recall": float(recall[choice]), "val_specificity": float(specificity[choice]),
            "n_val": len(scores)}


def apply_gate(probs: torch.Tensor, scores: np.ndarray, threshold: float, good_index: int) -> torch.Tensor:
    """Class probabilities after the gate: an image scoring below ``threshold`` is good (probability 1); one at
    or above it keeps the classifier's defect-class probabilities, renormalised, with good at 0."""
    gated = probs.clone()
    defect = torch.as_tensor(np.asarray(scores) >= threshold)
    gated[defect, good_index] = 0.0
    gated[defect] = gated[defect] / gated[defect].sum(dim=1, keepdim=True).clamp_min(1e-12)
    gated[~defect] = 0.0
    gated[~defect, good_index] = 1.0
    return gated


def combine_defect_probabilities(classifier: torch.Tensor, region: torch.Tensor | None, good_index: int
                                 ) -> torch.Tensor:
    """The defect-type probabilities the gate hands on: the classifier's, or with a region model the mean of the
    two, each renormalised over the defect classes (good is the gate's to decide)."""
    if region is None:
        return classifier
    defect = [i for i in range(classifier.shape[1]) if i != good_index]
    mixed = torch.zeros_like(classifier)
    for probs in (classifier, region.to(classifier.dtype)):
        part = probs[:, defect]
        mixed[:, defect] += part / part.sum(dim=1, keepdim=True).clamp_min(1e-12) / 2
    mixed[:, good_index] = classifier[:, good_index]  # kept only for images the gate passes as good
    return mixed


def gated_probabilities(probs: torch.Tensor, scores: np.ndarray, gate: dict, regions: np.ndarray,
                        class_names: list[str]) -> torch.Tensor:
    """The anomaly-guided prediction, as train.py makes it and evaluate.py re-makes it from a checkpoint's
    ``gate`` record (``threshold``, and ``region_model`` when the attempt has one): the defect type from the
    classifier's ``probs`` (mixed with the region model's on ``regions``), good vs defect from ``scores``."""
    good = class_names.index(GOOD)
    region = region_probabilities(gate["region_model"], regions, class_names) if "region_model" in gate else None
    return apply_gate(combine_defect_probabilities(probs, region, good), scores, gate["threshold"], good)


def score_with_regions(detector: PatchCore, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and region descriptors of ``images`` with one feature pass of the detector."""
    scores, descriptors = [], []
    for start in range(0, len(images), detector.config.batch_size):
        features = detector.extract(images[start:start + detector.config.batch_size])
        patch = detector.patch_scores(features)
        scores.append(detector.image_scores(patch))
        descriptors.append(region_descriptors(features, patch))
    return np.concatenate(scores), np.concatenate(descriptors)


def detector_path(checkpoint_file: Path) -> Path:
    """Where a split's gate detector is saved: beside the split's classifier checkpoint."""
    return checkpoint_file.with_name(checkpoint_file.stem + "_detector.pt")


# ---------------------------------------------------------------- the defect region's own descriptor

REGION_TOP_SHARE = 0.01  # the most anomalous 1 % of patches (16 of a 40 x 40 grid) describe the defect
AREA_LEVELS = (2.0, 2.5, 3.0)  # patch-distance levels at which the anomalous area is measured (log share)


def region_descriptors(features: torch.Tensor, patch_scores: torch.Tensor, top_share: float = REGION_TOP_SHARE
                       ) -> np.ndarray:
    """(N, C, h, w) detector features and (N, h, w) patch scores -> (N, 2C + 4) descriptors of each image's most
    anomalous region: the mean feature of its top ``top_share`` patches, a softmax-weighted mean over all patches
    (weights rise with the patch score), the log share of patches above each of ``AREA_LEVELS`` (size: broken_small
    against broken_large), and the maximum patch score."""
    n, c = features.shape[:2]
    f = features.reshape(n, c, -1).double()
    s = patch_scores.reshape(n, -1).double()
    k = max(1, int(top_share * s.shape[1]))
    top = torch.topk(s, k, dim=1).indices
    top_mean = torch.gather(f, 2, top[:, None, :].expand(n, c, k)).mean(2)
    spread = s.std(dim=1, keepdim=True) + 1e-6
    weights = torch.softmax((s - s.max(dim=1, keepdim=True).values) / spread, dim=1)
    weighted = torch.einsum("ncp,np->nc", f, weights)
    areas = torch.stack([torch.log((s >= level).double().mean(1) + 1e-4) for level in AREA_LEVELS], dim=1)
    return torch.cat([top_mean, weighted, areas, s.max(dim=1, keepdim=True).values], dim=1).numpy()


def fit_region_model(descriptors: np.ndarray, labels: list[str], seed: int) -> dict:
    """A standardised multinomial logistic regression (scikit-learn, C = 0.1) from region descriptors to the
    defect type, fitted on the split's defective training and validation images; returned as plain tensors, so a
    checkpoint holds it and loads with ``weights_only=True``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(set(labels)) < 2:
        raise UserError("the anomaly-guided attempt needs at least two defect types among each split's training "
                        "and validation defects")
    scaler = StandardScaler().fit(descriptors)
    model = LogisticRegression(C=0.1, max_iter=5000, random_state=seed).fit(scaler.transform(descriptors), labels)
    return {"mean": torch.from_numpy(scaler.mean_), "scale": torch.from_numpy(scaler.scale_),
            "coef": torch.from_numpy(model.coef_), "intercept": torch.from_numpy(model.intercept_),
            "classes": [str(c) for c in model.classes_]}


def region_probabilities(region_model: dict, descriptors: np.ndarray, class_names: list[str]) -> torch.Tensor:
    """(N, classes) probabilities of the region model over ``class_names`` (0 for classes it was not fitted on,
    good among them): the softmax of the standardised descriptors' linear scores, as scikit-learn computes them."""
    x = (torch.from_numpy(descriptors) - region_model["mean"]) / region_model["scale"]
    logits = x @ region_model["coef"].T + region_model["intercept"]
    if logits.shape[1] == 1:  # scikit-learn's binary form: one score for the second class
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    probs = torch.zeros(len(descriptors), len(class_names), dtype=torch.float64)
    probs[:, [class_names.index(c) for c in region_model["classes"]]] = torch.softmax(logits, dim=1)
    return probs.float()
