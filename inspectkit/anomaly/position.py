"""Position-aware scoring: how a good image's nearest-neighbour patch scores vary with the position in the frame,
learnt from the good images held out of the memory bank, and the diagnostic of where their maxima fall.

Where the frame's edges (a tile border, a corner, a part's outline) sit at a different place in every image,
nearest-neighbour scores are high at the border of every good image, and the border decides the image score. The
detector therefore scores each grid cell against the good images' scores at that cell: ``(d - loc) / spread``.

With 20-30 held-out images a cell's mean and spread are noisy, so each is shrunk (empirical Bayes) towards the
mean of its *group*: the cells at the same depth (0, 1, 2) of the same side of the frame, or the interior. A cell
keeps its own value only as far as cells of its group truly differ beyond sampling noise. The spread divides the
score only in part (``scale_power``): ``spread = cell_spread^p * mean_spread^(1-p)``. Measured on bottle, screw,
kolektorsdd and synthetic kinds, 3 seeds (python -m bench.anomaly_position; results/anomaly_position.json): p = 1
gains kolektorsdd 0.012 over p = 0.5 and costs screw 0.005; p = 0.5 keeps screw within 0.002 of plain nearest
neighbour and kolektorsdd within 0.005 of the Gaussian baseline.

The anomaly map divides by its own spread (``map_scale_power``, default 0: the location only, one scale for the
frame). The image score is a maximum over the cells, where a cell whose good scores vary more must not win by that
alone; the map's pixels are ranked across all cells and images at once, where dividing by the spread moves whole
cells up or down against each other. Pixel AUROC with the features whitened (0.25), map scale power 0 against 0.5,
3 seeds (results/anomaly_position.json, the rows "per-cell location only" and "half spread"): bottle 0.9857
against 0.9850, screw 0.9952 against 0.9950, kolektorsdd 0.9497 against 0.9507 (its Gaussian baseline 0.9438); the
synthetic kinds within 0.0001.
"""

from __future__ import annotations

import numpy as np

RING_DEPTH = 3  # cells 0..2 from each side form their own groups; deeper cells are the interior group
DEFAULT_SCALE_POWER = 0.5
DEFAULT_MAP_SCALE_POWER = 0.0
BORDER_WARNING_SHARE = 0.5  # warn when more than this share of the held-out good images peak in the outer ring
MODES = ("cell", "none")


def cell_groups(grid: tuple[int, int], depth: int = RING_DEPTH) -> np.ndarray:
    """(h, w) group index of each cell: ``4 * ring + side`` for the ``depth`` outer rings (side: 0 top, 1 bottom,
    2 left, 3 right, the nearest one), ``4 * depth`` for the interior."""
    h, w = grid
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    distance = np.stack(np.broadcast_arrays(rows, h - 1 - rows, cols, w - 1 - cols))
    ring, side = distance.min(axis=0), distance.argmin(axis=0)
    return np.where(ring < depth, 4 * ring + side, 4 * depth)


def _shrunk(values: np.ndarray, noise: np.ndarray | float, groups: np.ndarray) -> np.ndarray:
    """Each cell's ``values`` shrunk towards its group's mean by the empirical-Bayes weight
    ``tau^2 / (tau^2 + noise)``, ``tau^2`` the between-cell variance in the group beyond the sampling ``noise``."""
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), values.shape)
    out = np.empty_like(values, dtype=np.float64)
    for group in np.unique(groups):
        cells = groups == group
        tau2 = max(float(values[cells].var() - noise[cells].mean()), 0.0)
        weight = tau2 / (tau2 + noise[cells]) if tau2 > 0 else 0.0
        out[cells] = weight * values[cells] + (1 - weight) * values[cells].mean()
    return out


def position_statistics(grids: np.ndarray, scale_power: float = DEFAULT_SCALE_POWER,
                        depth: int = RING_DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """``(loc, spread)``, each (h, w) float32, from the good images' patch-score grids (N >= 2, h, w)."""
    grids = np.asarray(grids, dtype=np.float64)
    n = len(grids)
    if n < 2:
        raise ValueError("position statistics need at least two good images")
    groups = cell_groups(grids.shape[1:], depth)
    mean, std = grids.mean(axis=0), np.maximum(grids.std(axis=0, ddof=1), 1e-12)
    loc = _shrunk(mean, std ** 2 / n, groups)
    log_spread = _shrunk(np.log(std), 1.0 / (2 * (n - 1)), groups)  # the sampling variance of a log std
    spread = np.exp(scale_power * log_spread + (1 - scale_power) * log_spread.mean())
    return loc.astype(np.float32), spread.astype(np.float32)


def leave_one_out(grids: np.ndarray, scale_power: float = DEFAULT_SCALE_POWER,
                  depth: int = RING_DEPTH) -> np.ndarray:
    """Each good image's grid normalised with statistics from the *other* good images: scores as a new good
    image would get them, for setting thresholds (in-sample statistics would set them too low)."""
    grids = np.asarray(grids, dtype=np.float32)
    out = np.empty_like(grids)
    for i in range(len(grids)):
        loc, spread = position_statistics(np.delete(grids, i, axis=0), scale_power, depth)
        out[i] = (grids[i] - loc) / spread
    return out


def outer_ring_share(grids: np.ndarray) -> float:
    """The share of grids (N, h, w) whose maximum lies in the outermost ring of cells."""
    grids = np.asarray(grids)
    n, h, w = grids.shape
    rows, cols = np.divmod(grids.reshape(n, -1).argmax(axis=1), w)
    return float(np.mean((rows == 0) | (cols == 0) | (rows == h - 1) | (cols == w - 1)))


def border_diagnostic(raw: np.ndarray, normalized: np.ndarray | None) -> dict:
    """Where the held-out good images' maxima fall, before and after position-aware scoring, and whether to warn."""
    share = outer_ring_share(raw)
    after = outer_ring_share(normalized) if normalized is not None else None
    h, w = np.asarray(raw).shape[1:]
    ring_share_of_cells = 1 - max(h - 2, 0) * max(w - 2, 0) / (h * w)
    return {"validation_images": len(raw), "outer_ring_share_raw": share, "outer_ring_share_scored": after,
            "outer_ring_share_of_cells": ring_share_of_cells, "warn": share > BORDER_WARNING_SHARE,
            "note": "share of the held-out good images whose highest patch score lies in the outermost ring of grid "
                    "cells, with plain nearest-neighbour scores (raw) and with the detector's scores"}


def border_warning(diagnostic: dict) -> str | None:
    """The one-line warning for a fit where most good images peak at the frame's border, else None."""
    if not diagnostic or not diagnostic.get("warn"):
        return None
    after = diagnostic.get("outer_ring_share_scored")
    tail = (f"; position-aware scoring moved that to {after:.0%}" if after is not None else
            "; position-aware scoring is off (--position-norm none)")
    return (f"warning: {diagnostic['outer_ring_share_raw']:.0%} of the held-out good images score highest in the "
            f"outermost ring of the frame (edges that vary from image to image){tail}")
