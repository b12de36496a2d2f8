"""The detector's scoring, in one torch module: patch features -> nearest-neighbour distance to the memory bank ->
position-aware normalisation -> anomaly map and image score. Fitting, scoring, ``--images`` and the ONNX export all
run this module, so the math lives in one place.
"""

from __future__ import annotations

import torch
from torch import nn

from .maps import PostProcess

MATRIX_BUDGET = 2**25  # float32 entries of one query-by-bank distance matrix (128 MB)


class PatchScorer(nn.Module):
    """(N, C, h, w) patch features -> (anomaly maps (N, H, W), image scores (N,)).

    ``loc`` and ``spread`` (h, w) normalise each cell's distance as ``(d - loc) / spread`` (position.py); without
    them the distance is used as it is (loc 0, spread 1: plain nearest neighbour, the scoring before them).
    """

    def __init__(self, bank: torch.Tensor, grid: tuple[int, int], shape: tuple[int, int], sigma: float,
                 score_sigma: float, loc: torch.Tensor | None = None, spread: torch.Tensor | None = None) -> None:
        super().__init__()
        bank = bank.detach().float().cpu().contiguous()
        self.register_buffer("bank", bank)
        self.register_buffer("bank_sq", (bank * bank).sum(dim=1))
        self.register_buffer("loc", torch.zeros(grid) if loc is None else torch.as_tensor(loc).float())
        self.register_buffer("spread", torch.ones(grid) if spread is None else torch.as_tensor(spread).float())
        self.post = PostProcess(grid, shape, sigma, score_sigma)
        # queries per matrix product at run time: the (chunk x bank) matrix stays near 128 MB whatever the bank
        self.chunk = max(256, MATRIX_BUDGET // max(1, len(bank)))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, h, w) Euclidean distance of each patch to its nearest memory-bank patch."""
        n, c, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, c).float()
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # one product: the graph has no loop
            return self._nearest(queries).reshape(n, h, w)
        out = torch.empty(len(queries), device=queries.device)
        for start in range(0, len(queries), self.chunk):
            out[start:start + self.chunk] = self._nearest(queries[start:start + self.chunk])
        return out.reshape(n, h, w)

    def _nearest(self, queries: torch.Tensor) -> torch.Tensor:
        # |q - b|^2 = |q|^2 - 2 q.b + |b|^2: one matrix product, then the row minimum
        squared = torch.addmm(self.bank_sq[None, :], queries, self.bank.T, alpha=-2.0)
        return (squared.min(dim=1).values + (queries * queries).sum(dim=1)).clamp_min(0).sqrt()

    def normalize(self, distances: torch.Tensor) -> torch.Tensor:
        """(N, h, w) distances -> position-aware patch scores."""
        return (distances - self.loc) / self.spread

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.post(self.normalize(self.distances(features)))
