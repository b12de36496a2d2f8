"""The feature whitening the nearest-neighbour search runs in: a linear map learnt from the good patches of the
pool, so that the distance to the memory bank weighs each direction of the feature space by how much good patches
vary along it, not by the backbone's raw scale.

The map is ``(f - mean) @ transform`` with ``transform = V diag(lambda^(-power/2)) V^T`` from the eigen-decomposition
of the pool's covariance: each principal direction is divided by its standard deviation to the power ``power``;
0 is the plain Euclidean distance (the scoring before it), 1 the Mahalanobis distance of the pool. Eigenvalues below
``EIGEN_FLOOR`` times their mean are raised to it, so a direction the good patches never vary along (a dead
channel) is not blown up without bound.

Why 0.25 (mobilenet_v2, offline weights, position-aware scoring, mean of 3 seeds, python -m bench.anomaly_position;
results/anomaly_position.json), image / pixel AUROC (the map at the image score's spread, as it was then):
    power 0     bottle 1.000 / 0.9862   screw 0.9719 / 0.9951   kolektorsdd 0.9176 / 0.9480
    power 0.25  bottle 1.000 / 0.9850   screw 0.9768 / 0.9950   kolektorsdd 0.9268 / 0.9507
    power 0.5   bottle 1.000 / 0.9831   screw 0.9736 / 0.9947   kolektorsdd 0.9301 / 0.9532
0.25 gains on both hard categories; 0.5 gains kolektorsdd 0.003 more but gives back most of screw's gain and costs
bottle's pixel AUROC twice as much. The synthetic kinds score 1.000 at every power with ImageNet weights. In whitened
features scoring.py's principal-axis bound rules out fewer patches; its bfloat16 screen, where the CPU has one,
does not depend on the axes.
"""

from __future__ import annotations

import torch

EIGEN_FLOOR = 1e-3
DEFAULT_WHITEN = 0.25
CHUNK_ROWS = 1 << 15  # rows per step of the covariance sum and of the in-place map


def whitening(pool: torch.Tensor, power: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (C,), transform (C, C))``, float32, from good patches ``pool`` (M, C); power 0 gives the identity.
    The covariance is summed in float64 over row chunks, so its memory does not grow with the pool."""
    channels = pool.shape[1]
    if power == 0 or len(pool) < 2:
        return torch.zeros(channels), torch.eye(channels)
    mean = pool.sum(dim=0, dtype=torch.float64) / len(pool)
    scatter = torch.zeros(channels, channels, dtype=torch.float64)
    for part in pool.split(CHUNK_ROWS):
        centred = part.double() - mean
        scatter += centred.T @ centred
    values, vectors = torch.linalg.eigh(scatter / (len(pool) - 1))
    values = values.clamp_min(EIGEN_FLOOR * max(float(values.mean()), 1e-12))
    transform = (vectors * values.pow(-power / 2)) @ vectors.T
    return mean.float(), transform.float().contiguous()


def apply(features: torch.Tensor, mean: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Rows of features (M, C) in the whitened coordinates."""
    return (features - mean) @ transform


def apply_in_place(rows: torch.Tensor, mean: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """``apply`` on a float32 (M, C) tensor, overwriting it chunk by chunk (no second copy of a large pool)."""
    for part in rows.split(CHUNK_ROWS):
        part.copy_(apply(part, mean, transform))
    return rows
