"""The simple baseline: a PaDiM-like Gaussian per patch position (Mahalanobis distance), on the same features,
fitted from streamed batches (running sums), so its memory depends on the grid, not on the number of images."""

from __future__ import annotations

import numpy as np
import torch

from .cpu import one_thread
from .maps import DEFAULT_SCORE_SIGMA, DEFAULT_SIGMA, anomaly_maps, image_scores


class GaussianBaseline:
    """One Gaussian per grid position over the good training patches, its covariance regularised with
    ``epsilon * I`` as in PaDiM. A test patch scores its Mahalanobis distance to its position's Gaussian.

    Assumes roughly aligned objects (true of most MVTec categories), which PatchCore does not need.
    ``update`` adds a batch of good features, ``finish`` turns the sums into means and precisions.
    """

    def __init__(self, shape: int | tuple[int, int], sigma: float = DEFAULT_SIGMA, epsilon: float = 0.01,
                 score_sigma: float = DEFAULT_SCORE_SIGMA) -> None:
        self.shape = shape
        self.sigma = sigma
        self.score_sigma = score_sigma
        self.epsilon = epsilon
        self.mean: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None
        self._count = 0
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None

    @torch.inference_mode()
    def update(self, features: torch.Tensor) -> GaussianBaseline:
        """Add good patch features (N, C, h, w) to the running sums. The sums are float32 around a shift (the first
        batch's mean), so they stay accurate without float64's cost."""
        n, c, h, w = features.shape
        x = features.permute(2, 3, 0, 1).reshape(h * w, n, c)  # per position: N samples of C dims
        if self._sum is None:
            self._shift = x.mean(dim=1, keepdim=True)
            self._sum = torch.zeros(h * w, c)
            self._outer = torch.zeros(h * w, c, c)
        with one_thread():  # many small products: one thread is as fast idle and far faster on busy cores
            x = x - self._shift
            self._sum += x.sum(dim=1)
            self._outer.baddbmm_(x.transpose(1, 2), x)
        self._count += n
        return self

    @torch.inference_mode()
    def finish(self, chunk: int = 256) -> GaussianBaseline:
        if self._sum is None:
            raise RuntimeError("update the baseline with good features before finishing it")
        n = self._count
        shifted_mean = self._sum / n
        self.precision = torch.empty_like(self._outer)
        eye = self.epsilon * torch.eye(self._outer.shape[-1], dtype=torch.float64)
        with one_thread():  # many small float64 inverses, a chunk of positions at a time
            for start in range(0, len(self._outer), chunk):
                m = shifted_mean[start:start + chunk].double()
                cov = (self._outer[start:start + chunk].double() - n * m[:, :, None] * m[:, None, :]) / max(n - 1, 1)
                self.precision[start:start + chunk] = torch.linalg.inv(cov + eye).float()
        self.mean = shifted_mean + self._shift[:, 0]
        self._sum = self._outer = self._shift = None
        return self

    def fit(self, features: torch.Tensor) -> GaussianBaseline:
        """``features`` (N, C, h, w) of good images, all at once."""
        return self.update(features).finish()

    @torch.inference_mode()
    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, h, w) Mahalanobis distances."""
        n, c, h, w = features.shape
        with one_thread():
            delta = features.permute(2, 3, 0, 1).reshape(h * w, n, c) - self.mean[:, None]
            squared = (torch.bmm(delta, self.precision) * delta).sum(dim=2).clamp_min(0)
        return squared.sqrt().T.reshape(n, h, w)

    def maps(self, patch_scores: torch.Tensor) -> np.ndarray:
        return anomaly_maps(patch_scores, self.shape, self.sigma)

    def image_scores(self, patch_scores: torch.Tensor) -> np.ndarray:
        return image_scores(patch_scores, self.score_sigma)

    def score_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Patch features (N, C, h, w) -> image scores (N,) and anomaly maps (N, H, W)."""
        patch_scores = self.patch_scores(features)
        return self.image_scores(patch_scores), self.maps(patch_scores)
