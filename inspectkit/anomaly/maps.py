"""Anomaly-map post-processing: patch-grid scores upsampled to the image and smoothed with a Gaussian (sigma = 4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

DEFAULT_SIGMA = 4.0
TRUNCATE = 4.0  # the kernel covers +-4 sigma, as in anomalib and the PatchCore reference


def anomaly_maps(patch_scores: torch.Tensor, image_size: int, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """(N, h, w) patch scores -> (N, image_size, image_size) float32 maps: bilinear upsampling, then a
    separable Gaussian blur of each map (scipy; reflecting borders)."""
    maps = F.interpolate(patch_scores[:, None].float(), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)[:, 0].numpy()
    if sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), truncate=TRUNCATE, mode="mirror")
    return maps.astype(np.float32, copy=False)


def image_scores(maps: np.ndarray) -> np.ndarray:
    """The image score is the maximum of its map."""
    return maps.reshape(len(maps), -1).max(axis=1)
