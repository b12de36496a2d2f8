"""inspectkit.anomaly.features: stages on one grid, channels concatenated, bad backbones and stages refused."""

from __future__ import annotations

import pytest
import torch

from inspectkit.anomaly.features import build_extractor, default_layers
from inspectkit.errors import UserError


def test_mobilenet_stages_share_one_grid():
    extractor, weights = build_extractor("mobilenet_v2", "none")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    features = extractor(images)
    assert features.shape == (2, 24 + 32 + 96, 8, 8)  # features.3 + .6 + .13 on the stride-8 grid
    assert features.dtype == torch.float32
    assert weights["spec"] == "none"


def test_local_aggregation_smooths_neighbouring_patches():
    """A small local change moves the features of the patches around it far more than those far away."""
    extractor, _ = build_extractor("resnet18", "none")
    image = torch.full((1, 3, 128, 128), 128, dtype=torch.uint8)
    changed = image.clone()
    changed[..., 60:68, 60:68] = 255
    diff = (extractor(changed) - extractor(image)).abs().sum(dim=1)[0]
    assert diff.shape == (16, 16)
    assert diff[7:9, 7:9].min() > 5 * max(diff[0, 0], diff[15, 15])


def test_unsupported_backbone_and_stage():
    with pytest.raises(UserError, match="supports --arch"):
        default_layers("squeezenet1_1")
    with pytest.raises(UserError, match="--layers"):
        build_extractor("resnet18", "none", layers=("layer9",))
