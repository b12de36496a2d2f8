"""Streaming and bounded memory (patchcore's patch pool, the streamed Gaussian baseline, the nearest-neighbour
scorer): streamed results equal the all-at-once ones, and what is kept does not grow with the dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit.anomaly import GaussianBaseline, PatchCore, PatchCoreConfig
from inspectkit.anomaly.patchcore import OVERSAMPLE
from inspectkit.anomaly.scoring import PatchScorer


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
    patches = features.permute(0, 2, 3, 1).reshape(-1, 4)
    # every bank row is one of the good patches, and the bank has the ratio's size
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
