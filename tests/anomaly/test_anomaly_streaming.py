"""Streaming and bounded memory (patchcore's patch pool, the streamed Gaussian baseline, the nearest-neighbour
scorer, the work split over the cores): streamed and split results equal the all-at-once ones, and what is kept
does not grow with the dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit.anomaly import GaussianBaseline, PatchCore, PatchCoreConfig, scoring
from inspectkit.anomaly.cpu import Cores
from inspectkit.anomaly.patchcore import OVERSAMPLE
from inspectkit.anomaly.scoring import PatchScorer
from inspectkit.anomaly.whitening import apply as whiten


def test_streamed_gaussian_equals_torch_cov_per_position():
    torch.manual_seed(0)
    features = torch.randn(50, 8, 4, 5) * 3 + 10  # an offset that would hurt naive float32 sums
    streamed = GaussianBaseline((32, 40)).update(features[:20]).update(features[20:35]).update(features[35:]).finish()
    x = features.permute(2, 3, 0, 1).reshape(20, 50, 8).double()
    cov = torch.stack([torch.cov(x[i].T) for i in range(20)]) + 0.01 * torch.eye(8, dtype=torch.float64)
    assert torch.allclose(streamed.mean.double(), x.mean(dim=1), atol=1e-5)
    assert torch.allclose(streamed.precision.double(), torch.linalg.inv(cov), atol=1e-5)


def test_nearest_neighbour_scorer_equals_cdist():
    torch.manual_seed(1)
    bank, queries = torch.randn(300, 16), torch.randn(1000, 16)
    expected = torch.cdist(queries, bank).min(dim=1).values
    scorer = PatchScorer(bank, (1, 1), (8, 8), sigma=4.0, score_sigma=1.0)
    scorer.chunk = 128  # several chunks
    as_grid = queries.T.reshape(1, 16, 1000, 1)  # (N, C, h, w) with one image of 1000 x 1 patches
    assert torch.allclose(scorer.distances(as_grid).reshape(-1), expected, atol=1e-4)
    assert scorer.distances(bank[:5].T.reshape(1, 16, 5, 1)).abs().max() < 1e-3  # bank rows are at distance 0


@pytest.mark.parametrize("search", ["bound", "screen"])
@pytest.mark.parametrize("scale, shift, full", [(1.0, 0.0, False), (1e-3, 0.0, False), (1.0, 20.0, False),
                                                (1e3, -5e3, False), (1.0, 20.0, True), (1e-3, 0.0, True)],
                         ids=["unit", "tiny values", "far from the origin", "large values", "full product, far",
                              "full product, tiny"])
def test_the_bounded_search_finds_the_nearest_patch_in_152_channels(scale, shift, full, search, monkeypatch):
    """More channels than the bound's principal axes, clustered like patch features: the bound rules most of the
    bank out, and the distances still equal the brute-force ones, on the cores and in the traced (dense) form,
    at any scale and offset of the features (the bound's float rounding must stay below its slack). ``full``: every
    chunk takes the full product, as one whose bound leaves too many candidates does; it is exact too. Both
    searches run on every machine: the principal-axis ``bound`` and the bfloat16 ``screen`` (slow where the CPU
    emulates bfloat16, but exact)."""
    monkeypatch.setattr(scoring, "bfloat16_is_fast", lambda: search == "screen")
    if full:
        monkeypatch.setattr(scoring, "PAIRS_FULL", 0.0)
    generator = torch.Generator().manual_seed(2)
    centres = torch.randn(30, 152, generator=generator) * 3
    bank = centres[torch.randint(30, (1000,), generator=generator)] + torch.randn(1000, 152, generator=generator)
    bank = torch.cat([bank, bank + 0.003 * torch.randn(1000, 152, generator=generator)])  # near-ties: twins
    queries = torch.cat([bank[:50] + 1e-3,  # next to a bank patch
                         centres[torch.randint(30, (900,), generator=generator)]
                         + torch.randn(900, 152, generator=generator),
                         torch.randn(50, 152, generator=generator) * 10])  # far from everything
    bank, queries = bank * scale + shift, queries * scale + shift
    expected = torch.cdist(queries.double(), bank.double()).min(dim=1).values.float()
    scorer = PatchScorer(bank, (1, 1), (8, 8), sigma=4.0, score_sigma=1.0)
    assert (scorer._screens is not None) == (search == "screen")
    as_grid = queries.T.reshape(1, 152, len(queries), 1)
    with torch.inference_mode():
        bounded = scorer.distances(as_grid, Cores(2)).reshape(-1)
        dense = scorer._nearest(queries)
    assert torch.allclose(bounded, expected, rtol=1e-5, atol=1e-5 * scale)
    if search == "screen" and not full:  # every rung of the screen (leading axes, then all channels) is exact
        assert [axes for axes, _ in scorer._screens] == [96, 112, 128, None]
        for rung in range(len(scorer._screens)):
            scorer._screen_ladder.rung = rung
            with torch.inference_mode():
                on_rung = scorer._nearest_screened(queries, scorer._screens)
            assert torch.allclose(on_rung, expected, rtol=1e-5, atol=1e-5 * scale), rung
    # the traced form picks its patch by |b|^2 - 2 q.b, whose float rounding can prefer a twin that is farther by
    # up to ~1e-7 (|q|^2 + |b|^2); it measures that patch's distance directly
    rounding = 1e-6 * ((queries * queries).sum(dim=1) + (bank * bank).sum(dim=1).max())
    assert (dense >= expected * (1 - 1e-6)).all()
    assert (dense.double() ** 2 <= expected.double() ** 2 + rounding).all()
    if (scale, shift) == (1.0, 0.0):
        assert torch.allclose(dense, expected, rtol=1e-4, atol=1e-4)


def test_the_screen_is_a_lower_bound_of_every_distance():
    """The bfloat16 screen's product is at most |q - b|^2 - |q - centre|^2 for every pair, wherever the points lie
    (its rounding bound scales with the norms), and nearly equal to it: it rules out all but the nearest few."""
    generator = torch.Generator().manual_seed(3)
    for scale, shift in [(1.0, 0.0), (1e-4, 0.0), (1.0, 50.0), (1e4, 0.0)]:
        bank = torch.randn(500, 40, generator=generator) * scale + shift
        queries = torch.cat([bank[:100] + 1e-4 * scale, torch.randn(100, 40, generator=generator) * scale * 3 + shift])
        centre = bank.mean(dim=0)
        centred = queries - centre
        squares = (centred * centred).sum(dim=1)
        bound = torch.mm(scoring._screen_queries(centred, squares), scoring._screen_rows(bank, centre)).double()
        truth = torch.cdist(queries.double(), bank.double()).square() - squares.double()[:, None]
        assert (bound <= truth).all()
        assert ((truth - bound) / (truth + squares.double()[:, None]).clamp_min(1e-30)).median() < 0.05


def test_a_screen_that_fails_its_check_is_not_used(monkeypatch):
    """A product whose bound does not hold on this CPU (here: the squared norms raised) is found at construction,
    and the scorer searches with the principal-axis bound instead: still exact."""
    monkeypatch.setattr(scoring, "bfloat16_is_fast", lambda: True)
    honest = scoring._screen_rows

    def broken(bank: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        rows = honest(bank, centre)
        rows[-3] += 1.0
        return rows

    monkeypatch.setattr(scoring, "_screen_rows", broken)
    generator = torch.Generator().manual_seed(4)
    bank, queries = torch.randn(400, 24, generator=generator), torch.randn(300, 24, generator=generator)
    scorer = PatchScorer(bank, (1, 1), (8, 8), sigma=4.0, score_sigma=1.0)
    assert scorer._screens is None
    distances = scorer.distances(queries.T.reshape(1, 24, 300, 1)).reshape(-1)
    assert torch.allclose(distances, torch.cdist(queries, bank).min(dim=1).values, atol=1e-5)


def test_cores_run_the_parts_in_order_in_the_callers_inference_mode():
    cores = Cores(2)
    assert cores.ranges(10) == [slice(0, 5), slice(5, 10)] and cores.ranges(1) == [slice(0, 1)]
    assert cores.ranges(7, parts=3) == [slice(0, 2), slice(2, 5), slice(5, 7)]
    with torch.inference_mode():
        out = torch.zeros(10)

        def fill(part: slice) -> bool:
            out[part] += torch.arange(10.0)[part]  # in place on an inference tensor: only inside inference mode
            return torch.is_inference_mode_enabled() and torch.get_num_threads() == 1

        assert cores.map(fill, cores.ranges(10)) == [True, True]
    assert torch.equal(out, torch.arange(10.0))
    assert cores.map(lambda x: x * x, range(5)) == [0, 1, 4, 9, 16]


def test_the_pool_and_the_bank_are_bounded_whatever_the_dataset_size():
    config = PatchCoreConfig(arch="mobilenet_v2", image_size=320, coreset_ratio=0.02, max_bank=50_000)
    detector = PatchCore(torch.nn.Identity(), config, weights={})
    detector.begin_fit(100_000, (320, 320))  # 160 million patches
    assert detector.bank_size_before_coreset == 100_000 * 40 * 40
    assert detector.pool_size == OVERSAMPLE * 50_000
    small = PatchCore(torch.nn.Identity(), config, weights={}).begin_fit(10, (320, 320))
    assert small.pool_size == OVERSAMPLE * round(0.02 * 10 * 1600)


def test_streamed_fit_keeps_the_announced_pool_and_checks_the_count():
    config = PatchCoreConfig(arch="mobilenet_v2", coreset_ratio=0.05, max_bank=1000, seed=3)
    detector = PatchCore(torch.nn.Identity(), config, weights={}).begin_fit(6, (64, 64))
    features = torch.randn(6, 4, 8, 8)
    for start in range(0, 6, 4):  # batches of 4 and 2
        detector.add_good(features[start:start + 4])
    detector.finish_fit()
    patches = whiten(features.permute(0, 2, 3, 1).reshape(-1, 4), *detector.whitening)
    # every bank row is one of the good patches (in the whitened coordinates), and the bank has the ratio's size
    assert len(detector.bank) == round(0.05 * 6 * 64)
    assert all(bool((patches == row).all(dim=1).any()) for row in detector.bank)
    short = PatchCore(torch.nn.Identity(), config, weights={}).begin_fit(6, (64, 64))
    short.add_good(features[:4])
    with pytest.raises(RuntimeError, match="announced"):
        short.finish_fit()


def test_the_same_seed_gives_the_same_bank():
    features = torch.randn(6, 4, 8, 8)

    def bank(seed: int) -> np.ndarray:
        config = PatchCoreConfig(arch="mobilenet_v2", coreset_ratio=0.1, seed=seed)
        detector = PatchCore(torch.nn.Identity(), config, weights={}).begin_fit(6, (64, 64))
        detector.add_good(features)
        return detector.finish_fit().bank.numpy()

    assert np.array_equal(bank(0), bank(0)) and not np.array_equal(bank(0), bank(1))


def test_a_loose_screen_hands_over_to_the_principal_axes(monkeypatch):
    """Tight clusters far apart: every patch of a query's cluster lies within the screen's rounding bound, so the
    screen leaves hundreds of candidates per query. The scorer hands over to the principal-axis search after a few
    chunks, and every distance is still exact."""
    monkeypatch.setattr(scoring, "bfloat16_is_fast", lambda: True)
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(2, 32, generator=generator) * 10
    bank = centres[torch.arange(1200) % 2] + 0.01 * torch.randn(1200, 32, generator=generator)
    queries = centres[torch.arange(2000) % 2] + 0.01 * torch.randn(2000, 32, generator=generator)
    scorer = PatchScorer(bank, (1, 1), (8, 8), sigma=4.0, score_sigma=1.0)
    assert scorer._screens is not None
    with torch.inference_mode():  # on two cores: one chunk may hand over while the other searches
        distances = scorer.distances(queries.T.reshape(1, 32, 2000, 1), Cores(2)).reshape(-1)
    assert scorer._screens is None  # handed over
    expected = torch.cdist(queries.double(), bank.double()).min(dim=1).values.float()
    assert torch.allclose(distances, expected, rtol=1e-5, atol=1e-6)


def test_the_screen_moves_to_fewer_axes_while_it_leaves_few_candidates(monkeypatch):
    """Clustered features in 152 channels whose spread falls off along the axes: on all channels the screen leaves
    about 1.4 candidates per query (fewer than SCREEN_DOWN), so it moves to fewer axes; every distance is exact."""
    monkeypatch.setattr(scoring, "bfloat16_is_fast", lambda: True)
    generator = torch.Generator().manual_seed(6)
    scale = torch.linspace(2.0, 0.05, 152)  # a decaying spectrum, like whitened patch features
    centres = torch.randn(400, 152, generator=generator) * scale

    def around_centres(n: int) -> torch.Tensor:
        return centres[torch.randint(400, (n,), generator=generator)] + torch.randn(n, 152, generator=generator) * scale

    bank, queries = around_centres(3000), around_centres(3000)
    scorer = PatchScorer(bank, (1, 1), (8, 8), sigma=4.0, score_sigma=1.0)
    top = len(scorer._screens) - 1
    assert scorer._screen_ladder.rung == top
    with torch.inference_mode():
        distances = scorer.distances(queries.T.reshape(1, 152, 3000, 1)).reshape(-1)
    assert scorer._screens is not None and scorer._screen_ladder.rung < top  # it moved to fewer axes
    assert torch.allclose(distances, torch.cdist(queries.double(), bank.double()).min(dim=1).values.float(),
                          rtol=1e-5, atol=1e-5)
