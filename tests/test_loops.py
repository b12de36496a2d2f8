"""inspectkit/loops.py: the logit-adjusted loss and class priors, one epoch's batches, the optimizer the attempt
names, and early stopping."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from inspectkit.attempts import ATTEMPTS
from inspectkit.classifier import build_classifier
from inspectkit.loops import (
    EarlyStopping,
    LogitAdjustedLoss,
    class_priors,
    epoch_batches,
    make_fresh_head,
    make_optimizer,
)


def test_logit_adjusted_loss_is_cross_entropy_under_uniform_priors():
    torch.manual_seed(0)
    logits, target = torch.randn(50, 4), torch.randint(0, 4, (50,))
    uniform = LogitAdjustedLoss(torch.full((4,), 0.25), tau=1.0)
    assert uniform(logits, target).item() == pytest.approx(nn.functional.cross_entropy(logits, target).item(),
                                                           abs=1e-6)
    skewed = LogitAdjustedLoss(torch.tensor([0.85, 0.05, 0.05, 0.05]), tau=1.0)
    assert abs(skewed(logits, target).item() - uniform(logits, target).item()) > 1e-3


def _fit_linear(criterion: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    return model


def test_logit_adjustment_moves_decisions_toward_the_rare_class():
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(900, 2, generator=generator)
    rare = torch.randn(100, 2, generator=generator) + torch.tensor([1.5, 0.0])
    x, y = torch.cat([common, rare]), torch.cat([torch.zeros(900), torch.ones(100)]).long()
    plain = _fit_linear(nn.CrossEntropyLoss(), x, y)
    adjusted = _fit_linear(LogitAdjustedLoss(class_priors(y.tolist(), 2), tau=1.0), x, y)
    test_rare = torch.randn(1000, 2, generator=generator) + torch.tensor([1.5, 0.0])
    with torch.no_grad():
        recall_plain = (plain(test_rare).argmax(1) == 1).float().mean().item()
        recall_adjusted = (adjusted(test_rare).argmax(1) == 1).float().mean().item()
    assert recall_adjusted > recall_plain + 0.2  # a balanced-error classifier, not a prior-following one


def test_class_priors_never_zero():
    priors = class_priors([0, 0, 0, 1], 3)
    assert priors.tolist() == pytest.approx([3 / 5, 1 / 5, 1 / 5])


def test_an_epoch_visits_every_image_once_or_samples_the_classes_evenly():
    labels = torch.tensor([0] * 18 + [1] * 2)
    features = torch.arange(3 * 20).float().view(3, 20, 1)  # 3 views; the value tells the view and the image
    shuffled = epoch_batches(features, labels, replace(ATTEMPTS[1], batch_size=8), torch.Generator().manual_seed(0))
    assert [len(y) for _, y in shuffled] == [8, 8, 4]
    images = torch.cat([x.flatten() for x, _ in shuffled]).long() % 20
    assert sorted(images.tolist()) == list(range(20))  # each image once, in some view
    balanced = replace(ATTEMPTS[1], batch_size=1000, balanced_sampling=True)
    drawn = torch.cat([y for seed in range(20)
                       for _, y in epoch_batches(features, labels, balanced, torch.Generator().manual_seed(seed))])
    assert 0.4 < drawn.float().mean().item() < 0.6  # the 2 rare images drawn about as often as the 18 common ones


def test_the_optimizer_trains_the_tail_only_with_a_backbone_rate():
    model, _ = build_classifier("resnet18", "none", 3, train_levels=1, head="linear")
    fine_tune = make_optimizer(ATTEMPTS[2], model)
    assert [g["name"] for g in fine_tune.param_groups] == ["head", "backbone"]
    assert fine_tune.param_groups[1]["lr"] == ATTEMPTS[2].lr_backbone
    assert isinstance(fine_tune, torch.optim.AdamW)
    probe = make_optimizer(replace(ATTEMPTS[2], lr_backbone=0.0), model)
    assert [g["name"] for g in probe.param_groups] == ["head"]
    assert not any(p.requires_grad for p in model.tail.parameters())  # frozen, not silently left trainable
    with pytest.raises(ValueError, match="choose adam or adamw"):
        make_optimizer(replace(ATTEMPTS[1], optimizer="sgd"), model)


def test_a_fresh_head_is_reinitialised_and_leaves_the_original_alone():
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in head.state_dict().items()}
    torch.manual_seed(1)
    fresh = make_fresh_head(head)
    assert all(torch.equal(head.state_dict()[k], v) for k, v in before.items())
    assert not torch.equal(fresh[0].weight, head[0].weight)
    torch.manual_seed(1)
    assert torch.equal(make_fresh_head(head)[2].weight, fresh[2].weight)  # from the torch seed


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    model = nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2)
    history = [(0.5, 1.0), (0.8, 0.9), (0.8, 0.95), (0.7, 0.8)]
    stops = []
    for epoch, (f1, loss) in enumerate(history):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(stopper.step(model, epoch, f1, loss))
    assert stops == [False, False, False, True]
    assert stopper.best_epoch == 1 and stopper.best_state["weight"].item() == 1.0
    late = EarlyStopping(patience=2, start=2)
    assert [late.step(model, e, f1, loss) for e, (f1, loss) in enumerate(history)] == [False] * 4
    assert late.best_epoch == 2  # epochs 0-1 could not compete; epoch 2 beat nothing yet, epoch 3 scored lower
    keep_last = EarlyStopping(patience=None)
    for epoch, (f1, loss) in enumerate(history):
        keep_last.step(model, epoch, f1, loss)
    assert keep_last.best_epoch == 3
