"""inspectkit.anomaly.baseline: the streamed Gaussian per position gives numpy/scipy's Mahalanobis distance on the
same data, whatever the batches it was fed in, and its maps and image scores have the shapes the pipeline uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from inspectkit.anomaly.baseline import GaussianBaseline

N, C, H, W = 60, 6, 3, 4
EPSILON = 0.01


def _features(n: int, seed: int) -> torch.Tensor:
    """``n`` draws (noise seeded by ``seed``) of one distribution: correlated features whose mean differs per
    position, far from zero (the streamed sums' shift matters)."""
    shape = np.random.default_rng(0)
    mixing, offsets = shape.normal(size=(C, C)), 50.0 + 10.0 * shape.normal(size=(1, H, W, C))
    x = np.random.default_rng(seed + 1).normal(size=(n, H, W, C)) @ mixing + offsets
    return torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def _reference(train: torch.Tensor, test: torch.Tensor) -> np.ndarray:
    """(N, h, w) Mahalanobis distances with numpy's covariance (ddof 1) + epsilon I and scipy's distance."""
    x, y = train.double().numpy(), test.double().numpy()
    out = np.empty((len(y), H, W))
    for i in range(H):
        for j in range(W):
            samples = x[:, :, i, j]
            precision = np.linalg.inv(np.cov(samples, rowvar=False) + EPSILON * np.eye(C))
            mean = samples.mean(axis=0)
            out[:, i, j] = [mahalanobis(v, mean, precision) for v in y[:, :, i, j]]
    return out


@pytest.mark.parametrize("batches", [1, 4, 7], ids=["at once", "4 batches", "7 uneven batches"])
def test_streamed_distances_match_numpy_and_scipy(batches):
    train, test = _features(N, seed=0), _features(9, seed=1)
    baseline = GaussianBaseline((32, 32), epsilon=EPSILON)
    for chunk in torch.tensor_split(train, batches):
        baseline.update(chunk)
    baseline.finish()
    got = baseline.patch_scores(test).numpy()
    np.testing.assert_allclose(got, _reference(train, test), rtol=2e-3)
    assert got.shape == (9, H, W)


def test_a_shifted_patch_scores_higher_than_a_typical_one():
    train = _features(N, seed=0)
    baseline = GaussianBaseline((32, 32), epsilon=EPSILON).fit(train)
    typical = _features(1, seed=2)
    odd = typical.clone()
    odd[0, :, 1, 2] += 40.0  # one position far from its Gaussian
    scores = baseline.patch_scores(torch.cat([typical, odd]))
    assert scores[1, 1, 2] > 5 * scores[0, 1, 2]
    assert torch.allclose(scores[1, 0, 0], scores[0, 0, 0])  # the other positions do not move


def test_maps_and_image_scores_have_the_pipeline_shapes():
    baseline = GaussianBaseline((40, 56), sigma=2.0, epsilon=EPSILON).fit(_features(N, seed=0))
    image_scores, maps = baseline.score_features(_features(5, seed=3))
    assert maps.shape == (5, 40, 56) and image_scores.shape == (5,)
    assert np.all(np.isfinite(maps)) and np.all(image_scores >= 0)


def test_finishing_without_features_is_refused():
    with pytest.raises(RuntimeError, match="update the baseline"):
        GaussianBaseline(32).finish()
