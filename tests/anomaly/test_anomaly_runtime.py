"""inspectkit.anomaly.runtime: onnxruntime's patch features equal torch's (relative difference <= 1e-4), a detector
scores the same with either runtime, the graph is exported once per backbone, weights and input shape, and torch
runs where onnxruntime cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit import onnxrt
from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.features import build_extractor
from inspectkit.anomaly.runtime import FeatureRuntime, check_runtime
from inspectkit.errors import UserError

FEATURE_RTOL = 1e-4  # the parity target: largest difference relative to the largest torch feature


def images(n: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch, shape", [("mobilenet_v2", (64, 96)), ("resnet18", (64, 64))])
def test_onnxruntime_features_equal_torch_features(arch, shape):
    extractor, _ = build_extractor(arch, "none")
    batch = images(5, shape)
    runtime = FeatureRuntime(extractor, arch, "onnxruntime")
    assert runtime.prepare(shape) == "onnxruntime (exported)"
    ort_features = runtime(batch)  # 5 images: parts of 3 and 2 on two single-threaded sessions
    torch_features = extractor(batch)
    assert ort_features.shape == torch_features.shape == (5, extractor_channels(arch), shape[0] // 8, shape[1] // 8)
    difference = (ort_features - torch_features).abs().max() / torch_features.abs().max()
    assert difference <= FEATURE_RTOL, float(difference)
    assert torch_features.std() > 0 and not torch.equal(torch_features[0], torch_features[1])  # real features


def extractor_channels(arch: str) -> int:
    return {"mobilenet_v2": 24 + 32 + 96, "resnet18": 128 + 256}[arch]


def test_the_graph_is_exported_once_per_weights_and_input_shape(monkeypatch, tmp_path):
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path))  # an empty cache of its own
    extractor, _ = build_extractor("mobilenet_v2", "none")
    assert FeatureRuntime(extractor, "mobilenet_v2").prepare((64, 64)) == "onnxruntime (exported)"
    assert FeatureRuntime(extractor, "mobilenet_v2").prepare((64, 64)) == "onnxruntime (cache)"
    assert FeatureRuntime(extractor, "mobilenet_v2").prepare((64, 96)) == "onnxruntime (exported)"
    other, _ = build_extractor("mobilenet_v2", "none")
    with torch.no_grad():
        next(other.parameters()).add_(0.5)  # other weights: another graph, not the cached one
    assert FeatureRuntime(other, "mobilenet_v2").prepare((64, 64)) == "onnxruntime (exported)"
    assert onnxrt.graph_folder() == tmp_path / "onnx"  # beside the decode cache
    assert len(list(onnxrt.graph_folder().glob("features_mobilenet_v2_*.onnx"))) == 3


def fit(runtime: str) -> PatchCore:
    config = PatchCoreConfig(arch="mobilenet_v2", image_size=64, coreset_ratio=0.25, batch_size=4)
    return PatchCore.build(config, "none", runtime=runtime).fit(images(40, (64, 64), seed=1))


def test_a_detector_scores_the_same_with_either_runtime():
    by_ort, by_torch = fit("onnxruntime"), fit("torch")
    assert by_ort.features.name == "onnxruntime" and by_torch.features.name == "torch"
    assert by_ort.position["applied"]  # position statistics learnt from the held-out images, in both
    test = images(6, (64, 64), seed=2)
    ort_scores, ort_maps = by_ort.score(test)
    torch_scores, torch_maps = by_torch.score(test)
    np.testing.assert_allclose(ort_scores, torch_scores, rtol=1e-4)
    np.testing.assert_allclose(ort_maps, torch_maps, rtol=0, atol=1e-3 * float(np.abs(torch_maps).max()))
    assert by_ort.image_threshold == pytest.approx(by_torch.image_threshold, rel=1e-4)
    assert np.ptp(torch_scores) > 0


def test_torch_runs_where_onnxruntime_cannot(monkeypatch):
    extractor, _ = build_extractor("mobilenet_v2", "none")
    monkeypatch.setattr(onnxrt, "available", lambda: False)
    runtime = FeatureRuntime(extractor, "mobilenet_v2", "auto")
    assert runtime.prepare((64, 64)) == "torch"
    batch = images(3, (64, 64))
    # the torch module itself, one part of the batch per core (float rounding differs with the thread count)
    assert torch.allclose(runtime(batch), extractor(batch), rtol=1e-5, atol=1e-7) and runtime.name == "torch"


def test_bad_runtime_choices_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="choose auto, onnxruntime, torch"):
        check_runtime("tensorrt")
    with pytest.raises(UserError, match="CPU only"):
        check_runtime("onnxruntime", "cuda")
    monkeypatch.setattr("inspectkit.anomaly.runtime.available", lambda: False)
    with pytest.raises(UserError, match="pip install onnxruntime"):
        check_runtime("onnxruntime")
    assert check_runtime("auto") == "auto"
