"""Anomaly-map post-processing and the image score, kept apart: the map is the patch-score grid upsampled to the
image (bilinear) and smoothed (sigma 4 px); the image score is the maximum of the patch grid smoothed on the grid
itself. Both are linear per axis, so each is a pair of small matrices (``PostProcess``) that the detector, the
baseline and the ONNX export apply alike: ``rows @ grid @ cols^T``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

DEFAULT_SIGMA = 4.0
TRUNCATE = 4.0  # the kernel covers +-4 sigma, as in anomalib and the PatchCore reference
# Smoothing of the patch grid before its maximum is taken, in grid cells. One isolated high patch is more often
# noise than a defect; a defect raises its neighbours too. Measured on screw at 320 px (image AUROC, 3 seeds of
# the bank): raw maximum 0.91-0.93, sigma 0.5 cell 0.94-0.96, 1 cell 0.96-0.98; bottle is 1.000 with all.
DEFAULT_SCORE_SIGMA = 1.0


def upsample_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) matrix that resizes a vector as ``F.interpolate(mode="bilinear", align_corners=False)``
    resizes one axis (bilinear resizing is separable)."""
    eye = torch.eye(source, dtype=torch.float64)[None, None]
    return F.interpolate(eye, size=(target, source), mode="bilinear", align_corners=False)[0, 0].numpy()


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) matrix G with ``G @ x == gaussian_filter1d(x, sigma, truncate=4.0, mode="mirror")``; the
    identity for ``sigma <= 0``. Built from scipy itself, so it matches scipy at any size, including grids
    smaller than the kernel radius (where scipy mirrors repeatedly)."""
    eye = np.eye(size, dtype=np.float64)
    if sigma <= 0:
        return eye
    return ndimage.gaussian_filter1d(eye, sigma, axis=0, truncate=TRUNCATE, mode="mirror")


class PostProcess(torch.nn.Module):
    """Patch-score grids (N, h, w) -> anomaly maps (N, H, W) and image scores (N,), as matrix products."""

    def __init__(self, grid: tuple[int, int], shape: tuple[int, int], sigma: float = DEFAULT_SIGMA,
                 score_sigma: float = DEFAULT_SCORE_SIGMA) -> None:
        super().__init__()
        (h, w), (height, width) = grid, shape

        def constant(matrix: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(matrix.astype(np.float32))

        self.register_buffer("map_rows", constant(blur_matrix(height, sigma) @ upsample_matrix(h, height)))
        self.register_buffer("map_cols_t", constant((blur_matrix(width, sigma) @ upsample_matrix(w, width)).T))
        self.register_buffer("score_rows", constant(blur_matrix(h, score_sigma)))
        self.register_buffer("score_cols_t", constant(blur_matrix(w, score_sigma).T))

    def maps(self, grids: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.map_rows, grids.float()), self.map_cols_t)

    def image_scores(self, grids: torch.Tensor) -> torch.Tensor:
        smoothed = torch.matmul(torch.matmul(self.score_rows, grids.float()), self.score_cols_t)
        return smoothed.flatten(1).max(dim=1).values

    def forward(self, grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maps(grids), self.image_scores(grids)


def _grids(patch_scores: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(patch_scores, dtype=np.float32))


def anomaly_maps(patch_scores: torch.Tensor | np.ndarray, shape: int | tuple[int, int],
                 sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """(N, h, w) patch scores -> (N, H, W) float32 maps, ``shape`` = (H, W) or one side of a square: bilinear
    upsampling, then a Gaussian blur of each map (mirrored borders)."""
    shape = (shape, shape) if isinstance(shape, int) else tuple(shape)
    grids = _grids(patch_scores)
    with torch.inference_mode():
        return PostProcess(tuple(grids.shape[-2:]), shape, sigma).maps(grids).numpy()


def image_scores(patch_scores: torch.Tensor | np.ndarray, sigma: float = DEFAULT_SCORE_SIGMA) -> np.ndarray:
    """(N, h, w) patch scores -> (N,) image scores: the maximum of each grid after a Gaussian blur of ``sigma``
    cells (none for 0). Independent of the map's upsampling and blur."""
    grids = _grids(patch_scores)
    with torch.inference_mode():
        post = PostProcess(tuple(grids.shape[-2:]), tuple(grids.shape[-2:]), 0.0, sigma)
        return post.image_scores(grids).numpy()
