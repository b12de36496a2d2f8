"""Exact nearest-neighbour distances from query patches to the memory bank, in chunks (torch.cdist)."""

from __future__ import annotations

import torch

MATRIX_BUDGET = 2**25  # float32 entries of one query-by-bank distance matrix (128 MB)


class NearestNeighbourScorer:
    """Distance from each query row to its nearest memory-bank row (Euclidean), computed in bounded memory."""

    def __init__(self, bank: torch.Tensor, chunk: int | None = None) -> None:
        self.bank = bank.float().contiguous()
        self.bank_sq = (self.bank * self.bank).sum(dim=1)
        # queries per matrix product: its (chunk x bank) distance matrix stays near 128 MB whatever the bank size
        self.chunk = chunk or max(256, MATRIX_BUDGET // max(1, len(self.bank)))

    @torch.inference_mode()
    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        """(M, C) -> (M,) nearest distances."""
        out = torch.empty(len(queries))
        for start in range(0, len(queries), self.chunk):
            q = queries[start:start + self.chunk].float()
            # |q - b|^2 = |q|^2 - 2 q.b + |b|^2: one matrix product per chunk, then the row minimum
            sq = torch.addmm(self.bank_sq[None, :], q, self.bank.T, alpha=-2.0)
            nearest = sq.min(dim=1).values + (q * q).sum(dim=1)
            out[start:start + len(q)] = nearest.clamp_min_(0).sqrt_()
        return out
