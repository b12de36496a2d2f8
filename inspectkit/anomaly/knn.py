"""Exact nearest-neighbour distances from query patches to the memory bank, in chunks (torch.cdist)."""

from __future__ import annotations

import torch


class NearestNeighbourScorer:
    """Distance from each query row to its nearest memory-bank row (Euclidean), computed in bounded memory."""

    def __init__(self, bank: torch.Tensor, chunk: int = 8192) -> None:
        self.bank = bank.float().contiguous()
        self.bank_sq = (self.bank * self.bank).sum(dim=1)
        self.chunk = chunk

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
