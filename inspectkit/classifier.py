"""A TorchVision backbone cut into a frozen trunk and a trainable tail, with a new head for the category's classes.

The trunk's output can be computed once per image (and per augmented view), so training only runs the tail.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import UserError
from .models import build_model, normalize

_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def backbone_stages(model: nn.Module, arch: str) -> list[nn.Module]:
    """The feature-extracting part of a TorchVision classifier as an ordered list of modules."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        stages = list(features)
        if arch.startswith("densenet"):
            stages.append(nn.ReLU(inplace=False))  # densenet applies a ReLU after .features in forward()
        return stages
    if all(hasattr(model, name) for name in ("conv1", "bn1", "relu", "maxpool", *_RESNET_STAGES)):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return [stem, *(getattr(model, name) for name in _RESNET_STAGES)]
    raise UserError(f"--arch {arch} is not supported for training: use a convolutional model with a .features "
                    "block or ResNet layers (e.g. resnet18, resnet50, mobilenet_v2, efficientnet_b0, squeezenet1_1)")


def check_trainable(arch: str, weights: str) -> dict:
    """Build ``arch`` with ``weights`` once and check that it can be cut into trunk and tail, so that a bad
    --arch or --weights (unsupported model, no internet for imagenet, a file for another model) fails before a
    script writes anything. Returns the weights record."""
    backbone, weights_info = build_model(arch, weights)
    backbone_stages(backbone, arch)
    return weights_info


def _resolution_levels(stages: list[nn.Module], probe_size: int = 224) -> tuple[list[int], int]:
    """The output height of each stage on a probe image, and the channel count of the last one."""
    heights = []
    x = torch.zeros(1, 3, probe_size, probe_size)
    with torch.no_grad():
        for stage in stages:
            stage.eval()
            x = stage(x)
            heights.append(x.shape[-1])
    return heights, x.shape[1]


def split_point(heights: list[int], train_levels: int) -> int:
    """Index of the first trainable stage when the last ``train_levels`` resolution levels are trained."""
    if train_levels <= 0:
        return len(heights)
    levels = sorted(set(heights), reverse=True)
    coarsest = levels[-min(train_levels, len(levels))]
    return next(i for i, h in enumerate(heights) if h <= coarsest)


def make_head(in_features: int, num_classes: int, kind: str, hidden: int = 0, dropout: float = 0.0) -> nn.Module:
    """``linear``: dropout then one linear layer; ``mlp``: dropout, hidden layer with ReLU, dropout, linear."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                             nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    raise ValueError(f"unknown head '{kind}'; choose linear or mlp")


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold each eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` in the same ``nn.Sequential`` into the
    convolution, in place (the pair computes bn(conv(x)), so this is exact up to rounding); the batch norm
    becomes Identity. For inference only: a folded model must not be trained."""
    for block in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(block._modules)
        for conv_name, bn_name in itertools.pairwise(names):
            conv, bn = block._modules[conv_name], block._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                block._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                block._modules[bn_name] = nn.Identity()
    return model


def inference_trunk(trunk: nn.Module) -> nn.Module:
    """A copy of a frozen trunk made fast for inference on a CPU: batch norms folded, weights channels-last
    (together about 2.5x; outputs agree to float rounding, ~1e-6 relative)."""
    return fold_batch_norms(copy.deepcopy(trunk).eval()).to(memory_format=torch.channels_last)


class Classifier(nn.Module):
    """uint8 images -> normalise -> frozen ``trunk`` -> trainable ``tail`` -> global average pool -> ``head``.

    The trunk always stays in eval mode, so its batch-norm statistics are the pretrained ones.
    """

    def __init__(self, trunk: nn.Sequential, tail: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.trunk, self.tail, self.head = trunk, tail, head
        for param in self.trunk.parameters():
            param.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        self.trunk.eval()
        return self

    def trunk_features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.trunk(normalize(images_uint8))

    def from_trunk(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.tail(features), 1), 1)
        return self.head(pooled)

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.from_trunk(self.trunk_features(images_uint8))


def build_classifier(arch: str, weights: str, num_classes: int, *, train_levels: int, head: str,
                     head_hidden: int = 0, head_dropout: float = 0.0) -> tuple[Classifier, dict]:
    """The classifier and a record of its weights and of which stages are frozen (for the results JSON)."""
    backbone, weights_info = build_model(arch, weights)
    stages = backbone_stages(backbone, arch)
    heights, channels = _resolution_levels(stages)
    cut = split_point(heights, train_levels)
    model = Classifier(nn.Sequential(*stages[:cut]), nn.Sequential(*stages[cut:]),
                       make_head(channels, num_classes, head, head_hidden, head_dropout))
    layout = {"stages": len(stages), "frozen_stages": cut, "trainable_stages": len(stages) - cut,
              "stage_output_size_at_224": heights, "feature_channels": channels}
    return model, {"weights": weights_info, "layout": layout}
