"""The anomaly gate of the anomaly-guided attempts: per split, a good-only PatchCore detector fitted on that
split's good training images, its image-score threshold tuned on the split's validation part, and the rule that
lets it decide good vs defect while the classifier names the defect type.

A classifier that has seen a dozen images of each defect type guesses "good vs defect"; the detector measures it
against hundreds of good images. No test image is used for any choice: the detector never sees validation or test
images while fitting, and the threshold comes from the validation part alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .anomaly import PatchCore, PatchCoreConfig
from .anomaly.features import DEFAULT_LAYERS
from .errors import UserError


def check_gate_arch(arch: str) -> None:
    """The detector shares the classifier's backbone and weights file, so the arch must be one it supports."""
    if arch not in DEFAULT_LAYERS:
        raise UserError(f"the anomaly-guided attempts (3 and 4) need --arch {', '.join(DEFAULT_LAYERS)} (the anomaly "
                        f"detector's backbones); got '{arch}'. Run attempts 1-2 with it, or pick a supported arch")


def fit_gate(good_images: torch.Tensor, arch: str, weights: str, seed: int, device: torch.device) -> PatchCore:
    """A PatchCore detector (the toolkit's default configuration) fitted on ``good_images`` (N, 3, H, W) uint8.
    Nothing is held out: the split's labelled validation part sets the threshold instead."""
    config = PatchCoreConfig(arch=arch, image_size=int(good_images.shape[-1]), seed=seed, validation_share=0.0)
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


def detector_path(checkpoint_file: Path) -> Path:
    """Where a split's gate detector is saved: beside the split's classifier checkpoint."""
    return checkpoint_file.with_name(checkpoint_file.stem + "_detector.pt")
