"""The simple baseline: a PaDiM-like Gaussian per patch position (Mahalanobis distance), on the same features."""

from __future__ import annotations

import numpy as np
import torch

from .cpu import one_thread
from .maps import DEFAULT_SIGMA, anomaly_maps, image_scores


class GaussianBaseline:
    """One Gaussian per grid position over the good training patches, its covariance regularised with
    ``epsilon * I`` as in PaDiM. A test patch scores its Mahalanobis distance to its position's Gaussian.

    Assumes roughly aligned objects (true of most MVTec categories), which PatchCore does not need.
    """

    def __init__(self, image_size: int, sigma: float = DEFAULT_SIGMA, epsilon: float = 0.01) -> None:
        self.image_size = image_size
        self.sigma = sigma
        self.epsilon = epsilon
        self.mean: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    @torch.inference_mode()
    def fit(self, features: torch.Tensor) -> GaussianBaseline:
        """``features`` (N, C, h, w) of good images."""
        with one_thread():  # hundreds of small covariances and inverses
            return self._fit(features)

    def _fit(self, features: torch.Tensor) -> GaussianBaseline:
        n, c, h, w = features.shape
        x = features.permute(2, 3, 0, 1).reshape(h * w, n, c).double()  # per position: N samples of C dims
        self.mean = x.mean(dim=1)
        centred = x - self.mean[:, None]
        cov = centred.transpose(1, 2) @ centred / max(n - 1, 1) + self.epsilon * torch.eye(c, dtype=x.dtype)
        self.precision = torch.linalg.inv(cov).float()
        self.mean = self.mean.float()
        return self

    @torch.inference_mode()
    def score_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Patch features (N, C, h, w) -> image scores (N,) and anomaly maps (N, S, S)."""
        with one_thread():
            patch_scores = self._patch_scores(features)
        maps = anomaly_maps(patch_scores, self.image_size, self.sigma)
        return image_scores(maps), maps

    def _patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        delta = features.permute(2, 3, 0, 1).reshape(h * w, n, c) - self.mean[:, None]
        squared = (torch.bmm(delta, self.precision) * delta).sum(dim=2).clamp_min(0)
        return squared.sqrt().T.reshape(n, h, w)
