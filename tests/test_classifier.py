"""inspectkit/classifier.py: every supported backbone cut into a frozen trunk and a trainable tail, the split point
between them, and a clear error for a backbone it cannot cut."""

from __future__ import annotations

import pytest
import torch

from inspectkit.classifier import build_classifier, split_point
from inspectkit.errors import UserError


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18", "resnet50", "efficientnet_b0", "squeezenet1_1"])
def test_required_architectures_split_into_frozen_trunk_and_trainable_tail(arch):
    model, info = build_classifier(arch, "none", 4, train_levels=1, head="mlp", head_hidden=8, head_dropout=0.1)
    layout = info["layout"]
    assert 0 < layout["frozen_stages"] < layout["stages"]
    assert all(not p.requires_grad for p in model.trunk.parameters())
    assert any(p.requires_grad for p in model.tail.parameters())
    model.train()
    assert not model.trunk.training and model.tail.training
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert model(images).shape == (2, 4)


def test_linear_probe_freezes_the_whole_backbone():
    model, info = build_classifier("resnet18", "none", 3, train_levels=0, head="linear")
    assert len(model.tail) == 0 and info["layout"]["frozen_stages"] == info["layout"]["stages"]
    assert split_point([112, 56, 56, 28, 14, 7, 7], 1) == 5
    assert split_point([112, 56, 56, 28, 14, 7, 7], 2) == 4
    assert split_point([112, 56, 7], 99) == 0


def test_unsupported_architecture_is_a_user_error():
    with pytest.raises(UserError, match="not supported for training"):
        build_classifier("regnet_x_400mf", "none", 3, train_levels=1, head="linear")
