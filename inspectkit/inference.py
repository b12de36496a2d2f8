"""Class probabilities from a trained classifier: ``predict``, the plain reference through the whole model, and the
fast engine that train.py's test pass and evaluate.py share (batch norms folded, channels-last, ONNX Runtime on a CPU;
the frozen trunk's outputs computed once and the rest of the network run per checkpoint on them)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from .checkpoints import classifier_from_checkpoint
from .classifier import Classifier, fold_batch_norms
from .models import normalize, state_fingerprint
from .onnxrt import OnnxModule
from .tensors import EVAL_BATCH, augment_view

# Images per batch through the rest of the network: it is cheap per image, so a larger batch than the trunk's
# (EVAL_BATCH) spreads its per-call overhead; measured on 2 busy cores, 32 -> 128 cut it by about a third.
HEAD_BATCH = 128


@torch.no_grad()
def predict(model: Classifier, images_uint8: torch.Tensor, device: torch.device, views: int = 1) -> torch.Tensor:
    """Class probabilities (N, classes) for uint8 images, through the whole model: the plain reference that the
    fast path (``split_probabilities``) is tested against.

    ``views`` > 1 averages the probabilities over the first ``views`` flips/rotations (test-time augmentation).
    """
    model.eval()
    total = 0
    for view in range(views):
        oriented = torch.stack([augment_view(img, view, jitter=None) for img in images_uint8]) if view else images_uint8
        total = total + torch.cat([torch.softmax(model(oriented[i:i + EVAL_BATCH].to(device)), 1).cpu()
                                   for i in range(0, len(oriented), EVAL_BATCH)])
    return total / views


def trunk_fingerprint(checkpoint: dict) -> str:
    """sha256 of the architecture and every trunk tensor (name, dtype, shape, bytes) of a checkpoint's model:
    checkpoints with equal fingerprints compute the same trunk outputs, so they can share them."""
    trunk = state_fingerprint(checkpoint["model"], "trunk.")
    return hashlib.sha256(f"{checkpoint['arch']}:{trunk}".encode()).hexdigest()


class ClassifierCache:
    """``classifier_from_checkpoint``, built once per model structure and copied after that: building probes the
    backbone with a 224 px image, 0.2 s on idle cores and up to 2 s on busy ones, for each of twenty checkpoints.
    The state dict decides everything that matters in eval mode (dropout rates do nothing there). One run keeps
    one cache; it holds the last ``max_structures`` structures (a run meets one or two)."""

    def __init__(self, max_structures: int = 8) -> None:
        self.max_structures = max_structures
        # (arch, every tensor's name, shape and dtype) -> a classifier of that structure
        self._built: dict[tuple, Classifier] = {}

    def classifier(self, checkpoint: dict) -> Classifier:
        """The checkpoint's classifier in eval mode, with its own weights."""
        structure = (checkpoint["arch"], tuple((k, tuple(v.shape), v.dtype) for k, v in checkpoint["model"].items()))
        if structure not in self._built:
            if len(self._built) >= self.max_structures:
                self._built.pop(next(iter(self._built)))
            self._built[structure] = classifier_from_checkpoint(checkpoint)
            return copy.deepcopy(self._built[structure])
        model = copy.deepcopy(self._built[structure])
        model.load_state_dict(checkpoint["model"], strict=True)
        return model.eval()


def inference_model(checkpoint: dict, device: torch.device, classifiers: ClassifierCache | None = None) -> Classifier:
    """The checkpoint's classifier on ``device`` in eval mode, made faster for inference only: every batch norm
    that directly follows a convolution folded into it, and the weights in channels-last memory format (together
    about 2.5x faster on a CPU than the plain model; the outputs agree to float rounding, ~1e-6 relative).
    ``classifiers`` builds it once per structure; without one it is built from scratch."""
    model = classifier_from_checkpoint(checkpoint) if classifiers is None else classifiers.classifier(checkpoint)
    fold_batch_norms(model)
    return model.to(device, memory_format=torch.channels_last).eval()


class _FromTrunk(nn.Module):
    """``Classifier.from_trunk`` as a module's forward, so that it can be exported."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.from_trunk(features)


def trunk_runner(model: Classifier, device: torch.device,
                 image_shape: tuple[int, int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``trunk_outputs`` runs the frozen trunk on a uint8 batch of ``image_shape`` (3, H, W): on a CPU, through
    onnxruntime (its graph cached per trunk weights and input shape, ``onnxrt.OnnxModule``), else
    ``model.trunk_features``. The same outputs to float rounding (3e-6 on MobileNetV2 at 320 px); on 2 busy cores
    at 320 px, 16 instead of 38 ms per image."""
    if device.type == "cpu":
        example = normalize(torch.zeros((1, *image_shape), dtype=torch.uint8))
        key = {"module": "Classifier.trunk", "weights": state_fingerprint(model.trunk.state_dict())}
        run = OnnxModule.load(model.trunk, example, name="trunk", key=key, threads=torch.get_num_threads())
        if run is not None:
            return lambda images_uint8: run(normalize(images_uint8))
    return model.trunk_features


def head_runner(model: Classifier, device: torch.device,
                feature_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``split_probabilities`` runs the rest of the network on trunk outputs of ``feature_shape`` (C, h, w): on a
    CPU through onnxruntime (exported into memory, 0.5 s, then about 1.8x faster), else ``model.from_trunk``."""
    if device.type == "cpu":
        run = OnnxModule.load(_FromTrunk(model).eval(), torch.zeros((1, *feature_shape)),
                              threads=torch.get_num_threads())
        if run is not None:
            return run
    return model.from_trunk


@torch.no_grad()
def trunk_outputs(model: Classifier, images_uint8: torch.Tensor, views: int, device: torch.device,
                  progress: bool = True) -> torch.Tensor:
    """The frozen trunk's outputs for the first ``views`` test-time views (``augment_view`` without jitter) of
    uint8 images (N, 3, H, W): float tensor (views, N, C, h, w) on the CPU."""
    model.eval()
    run_trunk = trunk_runner(model, device, tuple(images_uint8.shape[1:]))
    outputs = None  # allocated at the first batch's shape, filled in place: no second copy at the end
    with tqdm(total=views * len(images_uint8), desc="trunk outputs", unit="img", leave=False,
              disable=not progress) as bar:
        for view in range(views):
            for start in range(0, len(images_uint8), EVAL_BATCH):
                batch = images_uint8[start:start + EVAL_BATCH]
                if view:
                    batch = torch.stack([augment_view(img, view, jitter=None) for img in batch])
                features = run_trunk(batch.to(device)).cpu()
                if outputs is None:
                    outputs = torch.empty((views, len(images_uint8), *features.shape[1:]), dtype=features.dtype)
                outputs[view, start:start + len(batch)] = features
                bar.update(len(batch))
    return outputs


@torch.no_grad()
def split_probabilities(checkpoint: dict, trunk_outputs: torch.Tensor, device: torch.device,
                        classifiers: ClassifierCache | None = None) -> torch.Tensor:
    """Class probabilities (N, classes) of one checkpoint from its test images' trunk outputs (views, N, C, h, w):
    the rest of the network per view, softmax, then the mean over views, as ``predict`` computes them.

    The one place that turns a checkpoint's classifier into test probabilities (an anomaly-guided checkpoint's gate
    is applied by its caller, ``gate.gated_probabilities``).
    """
    views, n = trunk_outputs.shape[:2]
    run_head = head_runner(inference_model(checkpoint, device, classifiers), device, tuple(trunk_outputs.shape[2:]))
    flat = trunk_outputs.flatten(0, 1)  # every view of every image, so the batches can be larger
    logits = torch.cat([run_head(flat[i:i + HEAD_BATCH].to(device)).cpu() for i in range(0, len(flat), HEAD_BATCH)])
    total = 0
    for view_probs in torch.softmax(logits, 1).view(views, n, -1):
        total = total + view_probs
    return total / views
