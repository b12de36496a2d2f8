"""inspectkit.anomaly.whitening and the whitened search: the map against numpy's covariance, its powers, the floor
for directions good patches never vary along, and the detector's distances against scipy's Mahalanobis distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.scoring import PatchScorer
from inspectkit.anomaly.whitening import EIGEN_FLOOR, apply, whitening


def correlated(n: int = 4000, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    mixing = rotation * np.array([3.0, 2.0, 1.0, 0.7, 0.5, 0.3])  # spreads 9 ... 0.09: all above the floor
    return torch.from_numpy(rng.normal(size=(n, 6)) @ mixing.T + 3.0).float()


def test_full_power_whitens_the_pool_and_half_power_takes_the_square_root_of_its_spread():
    pool = correlated()
    covariance = np.cov(pool.numpy().T)
    mean, transform = whitening(pool, 1.0)
    np.testing.assert_allclose(mean.numpy(), pool.numpy().mean(axis=0), rtol=1e-5)
    white = apply(pool, mean, transform).double().numpy()
    np.testing.assert_allclose(np.cov(white.T), np.eye(6), atol=1e-3)
    _, half = whitening(pool, 0.5)
    spread = np.linalg.eigvalsh(np.cov(apply(pool, mean, half).double().numpy().T))
    np.testing.assert_allclose(np.sort(spread), np.sort(np.sqrt(np.linalg.eigvalsh(covariance))), rtol=1e-3)


def test_chunked_sums_and_the_in_place_map_match_the_whole_pool(monkeypatch):
    from inspectkit.anomaly import whitening as module

    pool = correlated()
    whole = whitening(pool, 0.5)
    monkeypatch.setattr(module, "CHUNK_ROWS", 333)  # 13 uneven chunks
    chunked = whitening(pool, 0.5)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    expected = apply(pool, *whole)
    rows = pool.clone()
    assert module.apply_in_place(rows, *whole) is rows
    torch.testing.assert_close(rows, expected)


def test_power_zero_is_the_identity():
    mean, transform = whitening(correlated(), 0.0)
    assert torch.equal(transform, torch.eye(6)) and not mean.any()


def test_a_direction_without_spread_is_floored_not_blown_up():
    pool = correlated()
    pool[:, 2] = 0.5  # a dead channel: the same value in every good patch
    _, transform = whitening(pool, 1.0)
    assert torch.isfinite(transform).all()
    gain = float(torch.linalg.matrix_norm(transform, ord=2))
    eigen = np.linalg.eigvalsh(np.cov(pool.double().numpy().T))
    assert gain == pytest.approx((EIGEN_FLOOR * eigen.mean()) ** -0.5, rel=1e-3)  # the floor, not 1/sqrt(0)


def test_whitened_scorer_distances_are_scipys_mahalanobis_to_the_nearest_bank_patch():
    pool = correlated()
    mean, transform = whitening(pool, 1.0)
    bank_raw = pool[:300]
    scorer = PatchScorer(apply(bank_raw, mean, transform), (4, 5), (32, 40), 4.0, 1.0, None, None, mean, transform)
    queries = correlated(n=40, seed=1)
    queries[:5] += 20.0  # far from every good patch: the bound must still find the nearest
    features = queries.reshape(2, 4, 5, 6).permute(0, 3, 1, 2)
    inverse = np.linalg.inv(np.cov(pool.double().numpy().T))
    expected = cdist(queries.double().numpy(), bank_raw.double().numpy(), "mahalanobis", VI=inverse).min(axis=1)
    np.testing.assert_allclose(scorer.distances(features).reshape(-1).numpy(), expected, rtol=1e-3)


def test_the_detector_whitens_by_default_and_stores_its_bank_in_the_whitened_space():
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=generator)
    whitened = PatchCore.build(PatchCoreConfig(image_size=64, coreset_ratio=0.25), "none").fit(train)
    plain = PatchCore.build(PatchCoreConfig(image_size=64, coreset_ratio=0.25, whiten=0.0), "none").fit(train)
    assert whitened.config.whiten == 0.25 and whitened.scorer.whitened and not plain.scorer.whitened
    fresh = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=generator)  # not in the bank
    features = whitened.extract(fresh)
    queries = apply(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]), *whitened.whitening)
    nearest = torch.cdist(queries, whitened.bank).min(dim=1).values.reshape(1, *features.shape[2:])
    torch.testing.assert_close(whitened.patch_scores(features), nearest, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(whitened.patch_scores(features), plain.patch_scores(features), rtol=0.05)
