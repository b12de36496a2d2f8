"""The detector's scoring, in one torch module: patch features -> whitening (whitening.py) -> nearest-neighbour
distance to the memory bank (kept in the whitened coordinates) -> position-aware normalisation -> anomaly map and
image score. Fitting, scoring, ``--images`` and the ONNX export all
run this module, so the math lives in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from .cpu import Cores, one_thread
from .maps import PostProcess
from .whitening import apply as whiten

# The exact nearest-neighbour search on a CPU (``_nearest_bounded``): the queries' coordinates on the bank's k
# leading principal axes give a lower bound of every query-to-bank distance for k/C of the full product's
# arithmetic; only the bank patches whose bound is below the distance to the bank patch of the smallest bound can be
# the nearest, and only they are measured in full. Fewer axes cost less but leave more candidates, and how many
# depends on the features: 48 axes leave 9 per query on bottle (2.1-2.8x less CPU time than the full product), 17 on
# screw (2.2x) and 106 on kolektorsdd (slower than the full product there; 64 axes leave 24, 1.5x faster). So each
# scorer starts at BOUND_START axes and moves along BOUND_AXES as it goes: up a rung while more than PAIRS_UP
# candidates per query are left (averaged over its recent chunks), down one while fewer than PAIRS_DOWN. Whitened
# features (whitening.py) spread their variance over more axes, so their searches sit at the upper rungs.
BOUND_AXES = (32, 48, 64, 96, 128)
BOUND_START = 48
PAIRS_UP, PAIRS_DOWN = 30.0, 3.0
# More candidates per query than this and a chunk takes the full product instead: gathering them would cost more
# time than it and memory that grows with the bank (whitened features at a low rung left thousands per query: +1 GB)
PAIRS_FULL = 120.0
BOUND_SLACK = 1e-5  # of the squared norms: covers float rounding (~1e-7), so the bound never exceeds the distance
QUERY_CHUNK = 128  # queries per bounded search: its (queries x bank) bound matrix stays near the core's cache
# The screened search (``_nearest_screened``), where the CPU multiplies bfloat16 fast (AVX512-BF16, AMX, Arm's BF16;
# measured on this project's 2-core AMD EPYC: 3.0x float32's rate): one bfloat16 product of each chunk of queries
# with the whole bank gives every query-to-bank distance less a bound of its own rounding, folded into the product as
# extra columns, so it is a lower bound like the principal-axis one, but a tight one: on all channels 1.6-1.9
# candidates per query are left on bottle, screw and kolektorsdd (whitened), where the principal axes leave 9-106;
# 1.4-1.6x faster end to end of the search (fewer axes: SCREEN_AXES below). Where the nearest patches lie far closer
# than the features' norms (random-init features), the rounding bound hides them: a scorer whose screen leaves more
# than PAIRS_UP per query (running mean) goes over to the principal-axis search for good. bfloat16 keeps 8
# significant bits: each rounding is within UNIT of the value. The inputs' rounding moves 2 q.b by at most
# 4 UNIT |q||b|, the output's rounding at most UNIT (|b|^2 + 2 |q||b|) plus the folded terms' own; 5 % more covers
# the float32 accumulation (~1e-5) and what is second order. A CPU without fast bfloat16 keeps the principal-axis
# search.
UNIT = 2.0**-8
SCREEN_NORMS = 6.1 * UNIT * 1.05  # times |q||b|: the inputs' rounding, the output's, the norm columns' own
SCREEN_SQUARES = UNIT * 1.05  # times |b|^2: the output's rounding of the bank's squared norms
SCREEN_SPEEDUP = 1.5  # bfloat16 must multiply this much faster than float32 for the screen to be used
SCREEN_CHECK = 2048  # bank patches the screen's bound is checked against when a scorer is made
# Like the principal-axis bound, the screen can work on the bank's leading axes: fewer columns in its product, more
# candidates left. Measured (one thread, 40,000 queries, seconds / candidates per query): screw 96 axes 0.97 / 15,
# 112 0.90 / 6.7, 128 0.96 / 2.8, all 152 channels 1.11 / 1.6; kolektorsdd 96 0.89 / 26, 112 0.73 / 7.5, 128
# 0.83 / 3.0, 152 0.92 / 1.6. So a scorer starts on all channels and moves between these rungs to leave between
# SCREEN_DOWN and SCREEN_UP candidates per query.
SCREEN_AXES = (96, 112, 128)
SCREEN_UP, SCREEN_DOWN = 10.0, 3.0
T = TypeVar("T")
MATRIX_BUDGET = 2**22  # float32 entries of one query-by-bank matrix in the full product (a GPU, a traced graph)


class PatchScorer(nn.Module):
    """(N, C, h, w) patch features -> (anomaly maps (N, H, W), image scores (N,)).

    ``loc`` and ``spread`` (h, w) normalise each cell's distance as ``(d - loc) / spread`` for the image score, and
    ``map_spread`` (``spread`` if not given) as ``(d - loc) / map_spread`` for the anomaly map (position.py); without
    them the distance is used as it is (loc 0, spread 1: plain nearest neighbour, the scoring before them).
    ``mean`` (C,) and ``transform`` (C, C) whiten the features first (the bank is already in those coordinates);
    without them the features are used as they are.
    """

    def __init__(self, bank: torch.Tensor, grid: tuple[int, int], shape: tuple[int, int], sigma: float,
                 score_sigma: float, loc: torch.Tensor | None = None, spread: torch.Tensor | None = None,
                 mean: torch.Tensor | None = None, transform: torch.Tensor | None = None,
                 map_spread: torch.Tensor | None = None) -> None:
        super().__init__()
        bank = bank.detach().float().cpu().contiguous()
        channels = bank.shape[1]
        self.whitened = transform is not None
        self.register_buffer("feature_mean", torch.zeros(channels) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("transform", torch.eye(channels) if transform is None
                             else torch.as_tensor(transform).float().contiguous())
        self.register_buffer("bank", bank)
        self.register_buffer("bank_sq", (bank * bank).sum(dim=1))
        self.register_buffer("loc", torch.zeros(grid) if loc is None else torch.as_tensor(loc).float())
        self.register_buffer("spread", torch.ones(grid) if spread is None else torch.as_tensor(spread).float())
        self.register_buffer("map_spread", self.spread.clone() if map_spread is None
                             else torch.as_tensor(map_spread).float())
        self.post = PostProcess(grid, shape, sigma, score_sigma)
        with one_thread():  # small products: measured, a 152x152 eigh took 1.3 s on torch's 2 threads of busy cores
            centre, axes, self._bound_rows = _bound_axes(bank, self.bank_sq)
        self.register_buffer("centre", centre)
        self.register_buffer("axes", axes)
        start = max(i for i, rows in enumerate(self._bound_rows) if len(rows) - 1 <= BOUND_START or i == 0)
        self._bound_ladder = _Ladder(len(self._bound_rows), start, PAIRS_UP, PAIRS_DOWN)
        self._screens = self._screen_rungs(bank) if bfloat16_is_fast() else None
        screens = len(self._screens or [None])
        self._screen_ladder = _Ladder(screens, screens - 1, SCREEN_UP, SCREEN_DOWN)  # all channels first
        self.chunk = QUERY_CHUNK

    def distances(self, features: torch.Tensor, cores: Cores | None = None) -> torch.Tensor:
        """(N, C, h, w) -> (N, h, w) Euclidean distance of each patch to its nearest memory-bank patch; with
        ``cores``, the chunks of queries run side by side on them."""
        n, c, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, c).float()
        if self.whitened:
            queries = whiten(queries, self.feature_mean, self.transform)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # one product: the graph has no loop
            return self._nearest(queries).reshape(n, h, w)
        out = torch.empty(len(queries), device=queries.device)
        if queries.device.type == "cpu":
            nearest, chunk = self._nearest_cpu, self.chunk
        else:
            nearest, chunk = self._nearest, max(self.chunk, MATRIX_BUDGET // len(self.bank))

        def search(start: int) -> None:
            out[start:start + chunk] = nearest(queries[start:start + chunk])

        starts = range(0, len(queries), chunk)
        if cores is not None and queries.device.type == "cpu":
            cores.map(search, starts)
        else:
            for start in starts:
                search(start)
        return out.reshape(n, h, w)

    def _nearest(self, queries: torch.Tensor) -> torch.Tensor:
        # the nearest patch from |q - b|^2 - |q|^2 = |b|^2 - 2 q.b, one matrix product; its distance then measured
        # directly, as _nearest_bounded does (the expansion loses digits where q and b nearly coincide)
        squared = torch.addmm(self.bank_sq[None, :], queries, self.bank.T, alpha=-2.0)
        return _row_distances(queries, self.bank[squared.argmin(dim=1)])

    def _nearest_bounded(self, queries: torch.Tensor) -> torch.Tensor:
        """The same distances as ``_nearest`` (exactly the nearest patch, measured as |q - b| directly), from a
        lower bound of every distance that rules out all but a few bank patches per query (CPU tensors)."""
        rung = self._bound_ladder.rung
        bound_rows = self._bound_rows[rung]
        centred = queries - self.centre
        lead = centred @ self.axes[:, :len(bound_rows) - 1]
        offset = (lead * lead).sum(dim=1) - BOUND_SLACK * ((queries * queries).sum(dim=1)
                                                           + (centred * centred).sum(dim=1))
        # bound[i, j] + offset[i] <= |q_i - b_j|^2, one product (the bank's offsets ride on a column of ones);
        # numpy's row reductions are ~15x faster than torch's here
        bound = torch.mm(torch.cat([lead, torch.ones(len(queries), 1)], dim=1), bound_rows).numpy()
        return self._measured(queries, bound, offset, lambda pairs: self._bound_ladder.heard(rung, pairs))

    def _nearest_cpu(self, queries: torch.Tensor) -> torch.Tensor:
        """The screened search while it stays tight, else the principal-axis one. Chunks run on several threads,
        and one of them may hand the search over meanwhile: each reads the screens once."""
        screens = self._screens
        if screens is None:
            return self._nearest_bounded(queries)
        return self._nearest_screened(queries, screens)

    def _nearest_screened(self, queries: torch.Tensor,
                          screens: list[tuple[int | None, torch.Tensor]]) -> torch.Tensor:
        """The same distances as ``_nearest`` (exactly), from the bfloat16 screen's lower bound of every squared
        distance on the screen's axes (or all channels) less the query's own squared coordinates there (CPU
        tensors); |q - b|^2 is at least its part on any set of orthonormal axes."""
        rung = self._screen_ladder.rung
        axes, rows = screens[rung]
        centred = queries - self.centre
        coordinates = centred if axes is None else centred @ self.axes[:, :axes]
        squares = (coordinates * coordinates).sum(dim=1)
        bound = torch.mm(_screen_queries(coordinates, squares), rows).float().numpy()
        # the float32 rounding of |q - b|^2 and of the projection, as in _nearest_bounded
        slack = BOUND_SLACK * ((queries * queries).sum(dim=1) + (centred * centred).sum(dim=1))
        return self._measured(queries, bound, squares - slack, lambda pairs: self._adapt_screen(rung, pairs))

    def _measured(self, queries: torch.Tensor, bound: np.ndarray, offset: torch.Tensor,
                  adapt: Callable[[float], None]) -> torch.Tensor:
        """The exact nearest distances from a lower bound ``bound[i, j] + offset[i] <= |q_i - b_j|^2``: only the
        bank patches it leaves are measured in full, or the whole bank where it leaves more than PAIRS_FULL per
        query. ``adapt`` hears how many it left per query."""
        upper, left = self._left(queries, bound, offset)
        pairs = np.count_nonzero(left)
        adapt(pairs / len(queries))
        if pairs > PAIRS_FULL * len(queries):  # too loose: the full product, less its rounding
            squared = torch.addmm(self.bank_sq[None, :] * (1 - BOUND_SLACK), queries, self.bank.T, alpha=-2.0)
            upper, left = self._left(queries, squared.numpy(), (queries * queries).sum(dim=1) * (1 - BOUND_SLACK))
        candidates = torch.from_numpy(np.flatnonzero(left))
        rows, cols = candidates // len(self.bank), candidates % len(self.bank)
        found = _row_distances(queries.index_select(0, rows), self.bank.index_select(0, cols))
        return upper.scatter_reduce(0, rows, found, "amin")

    def _adapt_screen(self, rung: int, pairs: float) -> None:
        """The screen's ladder hears the chunk; on all channels and still more than PAIRS_UP candidates per query
        (running mean), the search goes over to the principal-axis bound for good: nearest patches far closer than
        the features' norms, as with random-init features, which bfloat16's rounding hides."""
        mean = self._screen_ladder.heard(rung, pairs)
        if rung == self._screen_ladder.rungs - 1 and mean > PAIRS_UP:
            self._screens = None

    def _screen_rungs(self, bank: torch.Tensor) -> list[tuple[int | None, torch.Tensor]] | None:
        """The screen's rungs, ``(axes, rows)`` with the bank's side of the product on the leading ``axes``
        principal axes (SCREEN_AXES, fewer than the channels) and last on all channels (``axes`` None); None where
        the bound does not hold on this CPU (``_screen_holds``)."""
        full = _screen_rows(bank, self.centre)
        if not self._screen_holds(bank, full):
            return None
        lead = (bank - self.centre) @ self.axes  # the bank's coordinates on its leading axes (centred already)
        rungs = [(k, _screen_rows(lead[:, :k], torch.zeros(k)))
                 for k in SCREEN_AXES if k < bank.shape[1] and k <= lead.shape[1]]
        return [*rungs, (None, full)]

    def _screen_holds(self, bank: torch.Tensor, rows: torch.Tensor) -> bool:
        """Whether the screen's bound stays below the true squared distances on this CPU, checked on queries
        near and between bank patches, against up to SCREEN_CHECK of them (a bfloat16 product that does not
        accumulate in float32 fails it)."""
        generator = torch.Generator().manual_seed(0)
        columns = torch.randperm(len(bank), generator=generator)[:SCREEN_CHECK]
        picks = bank[columns[torch.randint(len(columns), (2, 256), generator=generator)]]
        queries = torch.cat([picks[0] + 1e-3 * picks[0].abs().mean(), (picks[0] + picks[1]) / 2])
        centred = queries - self.centre
        squares = (centred * centred).sum(dim=1)
        bound = torch.mm(_screen_queries(centred, squares), rows[:, columns]).double()
        truth = torch.cdist(queries.double(), bank[columns].double()).square()
        return bool((bound + squares.double()[:, None] <= truth).all())

    def _left(self, queries: torch.Tensor, bound: np.ndarray, offset: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """From a lower bound ``bound[i, j] + offset[i] <= |q_i - b_j|^2``: the distance to the bank patch of the
        smallest bound (an upper bound of the nearest) and which bank patches can still be nearer."""
        best = torch.from_numpy(bound.argmin(axis=1))
        upper = _row_distances(queries, self.bank.index_select(0, best))
        return upper, bound <= (upper.square() - offset).numpy()[:, None]

    def normalize(self, distances: torch.Tensor) -> torch.Tensor:
        """(N, h, w) distances -> position-aware patch scores, for the image score."""
        return (distances - self.loc) / self.spread

    def normalize_map(self, distances: torch.Tensor) -> torch.Tensor:
        """(N, h, w) distances -> position-aware patch scores, for the anomaly map."""
        return (distances - self.loc) / self.map_spread

    def on_cores(self, step: Callable[[torch.Tensor], T], grids: torch.Tensor, cores: Cores | None) -> list[T]:
        """``step`` (the post-processing's ``maps``, ``image_scores`` or both) on the grids in one part per core:
        small products, which torch's own threads slow down on busy cores."""
        if cores is None or grids.device.type != "cpu":
            return [step(grids)]
        return cores.map(lambda part: step(grids[part]), cores.ranges(len(grids)))

    def forward(self, features: torch.Tensor, cores: Cores | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        distances = self.distances(features, cores)
        maps = self.on_cores(self.post.maps, self.normalize_map(distances), cores)
        scores = self.on_cores(self.post.image_scores, self.normalize(distances), cores)
        return torch.cat(maps), torch.cat(scores)


def _bound_axes(bank: torch.Tensor, bank_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(centre, axes, rows)``: the bank's mean, its leading principal axes (C, k) and, per rung of BOUND_AXES,
    the bank's coordinates on that many axes times -2 above their squared norms less the slack ((k + 1, M))."""
    centre = bank.mean(dim=0)
    centred = bank - centre
    _, axes = torch.linalg.eigh((centred.T @ centred).double())  # ascending eigenvalues: the last lead
    rungs = sorted({min(k, bank.shape[1]) for k in BOUND_AXES})
    axes = axes.flip(1)[:, :rungs[-1]].float().contiguous()
    lead = centred @ axes
    slack = BOUND_SLACK * (bank_sq + (centred * centred).sum(dim=1))
    rows = [torch.cat([-2.0 * lead[:, :k].T, ((lead[:, :k] ** 2).sum(dim=1) - slack)[None]]).contiguous()
            for k in rungs]
    return centre, axes, rows


class _Ladder:
    """Which rung of a search's bound a scorer uses (fewer axes: a cheaper product, more candidates left): a running
    mean of the candidates left per query moves it up a rung above ``up`` and down one below ``down``. Only the
    speed depends on it: every rung finds the same nearest patches. Chunks run on several threads update it without
    a lock: a lost update only delays a move by a chunk."""

    def __init__(self, rungs: int, start: int, up: float, down: float) -> None:
        self.rungs, self.rung, self.up, self.down = rungs, start, up, down
        self.pairs = (up + down) / 2

    def heard(self, rung: int, pairs: float) -> float:
        """Take a chunk's ``pairs`` per query, searched at ``rung``; returns the running mean before any move."""
        self.pairs = mean = 0.8 * self.pairs + 0.2 * pairs
        if mean > self.up and rung + 1 < self.rungs:
            self.rung, self.pairs = rung + 1, (self.up + self.down) / 2
        elif mean < self.down and rung > 0:
            self.rung, self.pairs = rung - 1, (self.up + self.down) / 2
        return mean


@cache
def bfloat16_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices SCREEN_SPEEDUP times faster than float32 (measured once per
    process on one thread, in ~20 ms: a CPU without bfloat16 instructions emulates them, far slower)."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(QUERY_CHUNK, 160, generator=generator), torch.randn(160, 4096, generator=generator)

    def seconds(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            torch.mm(x, y)
            best = min(best, time.perf_counter() - start)
        return best

    with one_thread():
        return seconds(a, b) > SCREEN_SPEEDUP * seconds(a.bfloat16(), b.bfloat16())


def _screen_rows(bank: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(C + 3, M) bfloat16: the bank's side of the screen's product, -2 (b - centre), then |b - centre|^2 lowered by
    its rounding bound (as a high and a low bfloat16 part, so it keeps 16 bits), then -SCREEN_NORMS |b - centre|."""
    centred = bank - centre
    squares = (centred * centred).sum(dim=1)
    norms = squares.sqrt()
    lowered = squares * (1 - SCREEN_SQUARES)
    high = lowered.bfloat16().float()
    low = lowered - high
    return torch.cat([-2.0 * centred.T, high[None], low[None], -SCREEN_NORMS * norms[None]]).bfloat16().contiguous()


def _screen_queries(centred: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """(N, C + 3) bfloat16: the queries' side of the screen's product, their centred coordinates (on all channels or
    on leading axes), 1, 1, and their norm; its product with ``_screen_rows`` of the bank's coordinates on the same
    axes is at most |q - b|^2 - |q|^2 there, for every bank patch b."""
    ones = torch.ones(len(centred), 2)
    return torch.cat([centred, ones, squares.sqrt()[:, None]], dim=1).bfloat16()


def _row_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise |a_i - b_i|."""
    return torch.linalg.vector_norm(a - b, dim=1)
