"""The parts of fine-tuning that an ``Attempt`` names: the loss (plain or logit-adjusted cross-entropy), optimizer,
schedule, one epoch's batches of trunk features, the ``train_one_epoch`` / ``evaluate`` loops, early stopping and a
freshly initialised head."""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .attempts import Attempt
from .classifier import Classifier
from .tensors import EVAL_BATCH


class LogitAdjustedLoss(nn.Module):
    """Cross-entropy on ``logits + tau * log(prior)`` (Menon et al., ICLR 2021, the loss form).

    Training with it makes the raw logits fit a balanced error, so rare classes win more decisions at test
    time; with uniform priors or ``tau = 0`` it is plain cross-entropy.
    """

    def __init__(self, priors: torch.Tensor, tau: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("offset", tau * torch.log(priors.float()))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits + self.offset, target)


def class_priors(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Class frequencies of ``labels``; a class with no example gets a count of one so its log stays finite."""
    counts = Counter(labels)
    freq = torch.tensor([max(counts.get(c, 0), 1) for c in range(num_classes)], dtype=torch.float)
    return freq / freq.sum()


def make_criterion(attempt: Attempt, train_labels: Sequence[int], num_classes: int) -> nn.Module:
    if attempt.loss == "cross_entropy":
        return nn.CrossEntropyLoss()
    if attempt.loss == "logit_adjusted":
        return LogitAdjustedLoss(class_priors(train_labels, num_classes), attempt.logit_adjust_tau)
    raise ValueError(f"unknown loss '{attempt.loss}'; choose cross_entropy or logit_adjusted")


def make_optimizer(attempt: Attempt, model: Classifier) -> torch.optim.Optimizer:
    """The head at ``lr_head``; the trainable tail at ``lr_backbone``, or frozen when that is 0."""
    groups = [{"params": list(model.head.parameters()), "lr": attempt.lr_head, "name": "head"}]
    tail = [p for p in model.tail.parameters() if p.requires_grad]
    if tail and attempt.lr_backbone > 0:
        groups.append({"params": tail, "lr": attempt.lr_backbone, "name": "backbone"})
    else:
        for param in tail:
            param.requires_grad_(False)
    if attempt.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=attempt.weight_decay)
    if attempt.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=attempt.weight_decay)
    raise ValueError(f"unknown optimizer '{attempt.optimizer}'; choose adam or adamw")


def make_scheduler(attempt: Attempt, optimizer: torch.optim.Optimizer,
                   epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    if attempt.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if attempt.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule '{attempt.schedule}'; choose constant or cosine")


def make_fresh_head(head: nn.Module) -> nn.Module:
    """A copy of ``head`` with every layer's parameters re-initialised (from the current torch seed)."""
    fresh = copy.deepcopy(head)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh


def epoch_batches(features: torch.Tensor, labels: torch.Tensor, attempt: Attempt,
                  generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled (or class-balanced) batches of a (views, N, ...) feature bank, each image in a
    randomly chosen view."""
    n = labels.shape[0]
    if attempt.balanced_sampling:
        weights = 1.0 / torch.bincount(labels).float()[labels]
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    views = torch.randint(features.shape[0], (n,), generator=generator)
    return [(features[views[idx], idx], labels[idx])
            for idx in (order[i:i + attempt.batch_size] for i in range(0, n, attempt.batch_size))]


def train_one_epoch(model: Classifier, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                    desc: str = "", progress: bool = True) -> float:
    """One pass over ``batches`` of (trunk features, labels); returns the mean training loss per image."""
    model.train()
    total, seen = 0.0, 0
    with tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress) as bar:
        for features, labels in bar:
            features, labels = features.to(device), labels.to(device)
            loss = criterion(model.from_trunk(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: Classifier, criterion: nn.Module, features: torch.Tensor, labels: torch.Tensor,
             device: torch.device) -> tuple[float, np.ndarray]:
    """Mean loss and predicted class indices on trunk ``features``."""
    model.eval()
    logits = torch.cat([model.from_trunk(features[i:i + EVAL_BATCH].to(device)).cpu()
                        for i in range(0, len(features), EVAL_BATCH)])
    return float(criterion(logits, labels).item()), logits.argmax(1).numpy()


@dataclass
class EarlyStopping:
    """Keep the best model by validation macro-F1 (ties: lower validation loss); stop after ``patience`` bad epochs;
    ``patience=None`` keeps the last epoch."""

    patience: int | None
    start: int = 0
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    best_epoch: int = -1
    best_state: dict = field(default_factory=dict)
    bad_epochs: int = 0

    def step(self, model: nn.Module, epoch: int, val_macro_f1: float, val_loss: float) -> bool:
        """Record this epoch; True when training should stop. Before epoch ``start`` the latest model is kept
        without competing, so a lucky early score on a small validation set cannot end training."""
        if epoch < self.start:
            self.best_epoch, self.best_state = epoch, copy.deepcopy(model.state_dict())
            return False
        key = (val_macro_f1, -val_loss)
        if self.patience is None or key > self.best_key:
            self.best_key, self.best_epoch, self.bad_epochs = key, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience
