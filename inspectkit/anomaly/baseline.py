"""The simple baseline: a PaDiM-like Gaussian per patch position (Mahalanobis distance), on the same features,
fitted from streamed batches (running sums), so its memory depends on the grid, not on the number of images."""

from __future__ import annotations

import numpy as np
import torch

from .cpu import Cores
from .maps import DEFAULT_SCORE_SIGMA, DEFAULT_SIGMA, anomaly_maps, image_scores

SUM_IMAGES = 64  # good images whose features wait for one product into the running sums


class GaussianBaseline:
    """One Gaussian per grid position over the good training patches, its covariance regularised with
    ``epsilon * I`` as in PaDiM. A test patch scores its Mahalanobis distance to its position's Gaussian.

    Assumes roughly aligned objects (true of most MVTec categories), which PatchCore does not need.
    ``update`` adds a batch of good features, ``finish`` turns the sums into means and precisions. Every step
    works on the positions in parts, one per core (``cores``).
    """

    def __init__(self, shape: int | tuple[int, int], sigma: float = DEFAULT_SIGMA, epsilon: float = 0.01,
                 score_sigma: float = DEFAULT_SCORE_SIGMA, cores: Cores | None = None) -> None:
        self.shape = shape
        self.sigma = sigma
        self.score_sigma = score_sigma
        self.epsilon = epsilon
        self.cores = cores or Cores()
        self.mean: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None
        self._count = 0
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []

    @torch.inference_mode()
    def update(self, features: torch.Tensor) -> GaussianBaseline:
        """Add good patch features (N, C, h, w) to the running sums. The sums are float32 around a shift (the first
        batch's mean), so they stay accurate without float64's cost. Batches wait until ``SUM_IMAGES`` images
        are pending: the (positions, C, C) sums are read and written once per product, so fewer, larger products
        move less memory (bounded: the pending features are at most ``SUM_IMAGES`` images')."""
        n, c, h, w = features.shape
        x = features.permute(2, 3, 0, 1).reshape(h * w, n, c)  # per position: N samples of C dims
        if self._sum is None:
            self._shift = x.mean(dim=1, keepdim=True)
            self._sum = torch.zeros(h * w, c)
            self._outer = torch.zeros(h * w, c, c)
        self._pending.append(x - self._shift)
        self._count += n
        if sum(p.shape[1] for p in self._pending) >= SUM_IMAGES:
            self._add_pending()
        return self

    def _add_pending(self) -> None:
        if not self._pending:
            return
        x = torch.cat(self._pending, dim=1)
        self._pending = []

        def add(part: slice) -> None:
            self._sum[part] += x[part].sum(dim=1)
            self._outer[part].baddbmm_(x[part].transpose(1, 2), x[part])

        self.cores.map(add, self.cores.ranges(len(x)))

    @torch.inference_mode()
    def finish(self, chunk: int = 64) -> GaussianBaseline:
        if self._sum is None:
            raise RuntimeError("update the baseline with good features before finishing it")
        self._add_pending()
        n = self._count
        shifted_mean = self._sum / n
        self.precision = torch.empty_like(self._outer)

        def invert(part: slice) -> None:  # float64 inverses of SPD matrices, a chunk of positions at a time
            for start in range(part.start, part.stop, chunk):
                rows = slice(start, min(start + chunk, part.stop))
                m = shifted_mean[rows].double()
                cov = self._outer[rows].double().baddbmm_(m[:, :, None], m[:, None, :], alpha=-n)
                cov /= max(n - 1, 1)
                cov.diagonal(dim1=1, dim2=2).add_(self.epsilon)
                self.precision[rows] = torch.cholesky_inverse(torch.linalg.cholesky(cov)).float()

        self.cores.map(invert, self.cores.ranges(len(self._outer)))
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
        x = features.permute(2, 3, 0, 1).reshape(h * w, n, c)
        squared = torch.empty(h * w, n)

        def score(part: slice) -> None:
            delta = x[part] - self.mean[part, None]
            squared[part] = (torch.bmm(delta, self.precision[part]) * delta).sum(dim=2)

        self.cores.map(score, self.cores.ranges(h * w))
        return squared.clamp_min(0).sqrt().T.reshape(n, h, w)

    def maps(self, patch_scores: torch.Tensor) -> np.ndarray:
        return anomaly_maps(patch_scores, self.shape, self.sigma)

    def image_scores(self, patch_scores: torch.Tensor) -> np.ndarray:
        return image_scores(patch_scores, self.score_sigma)

    def score_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Patch features (N, C, h, w) -> image scores (N,) and anomaly maps (N, H, W)."""
        patch_scores = self.patch_scores(features)
        return self.image_scores(patch_scores), self.maps(patch_scores)
