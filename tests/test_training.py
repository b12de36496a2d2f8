"""The training library: logit-adjusted loss, augmented views, trunk/tail surgery, feature bank, checkpoints,
early stopping, and a short run that must learn an easy synthetic set."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from inspectkit.attempts import ATTEMPTS
from inspectkit.cache import DecodeCache
from inspectkit.classifier import Classifier, build_classifier, split_point
from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.splits import make_splits
from inspectkit.synthetic import make_category
from inspectkit.training import (
    EarlyStopping,
    LogitAdjustedLoss,
    augment_view,
    class_priors,
    classifier_from_checkpoint,
    load_checkpoint,
    predict,
    save_checkpoint,
    train_attempt,
    trunk_feature_bank,
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


def test_augmented_views_are_the_eight_symmetries_of_the_square():
    image = torch.arange(3 * 5 * 5, dtype=torch.uint8).reshape(3, 5, 5)
    views = [augment_view(image, v, jitter=None) for v in range(8)]
    assert torch.equal(views[0], image)
    assert len({v.numpy().tobytes() for v in views}) == 8
    assert torch.equal(augment_view(image, 8, None), image)
    assert all(sorted(v.flatten().tolist()) == sorted(image.flatten().tolist()) for v in views)


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


def test_trunk_bank_view_zero_matches_the_whole_model():
    model, _ = build_classifier("mobilenet_v2", "none", 3, train_levels=1, head="linear")
    model.eval()
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    bank = trunk_feature_bank(model, images, views=3, seed=0, device=torch.device("cpu"), augment=True,
                              progress=False)
    assert bank.shape[:2] == (3, 5)
    with torch.no_grad():
        assert torch.allclose(model.from_trunk(bank[0]), model(images), atol=1e-5)
    assert not torch.allclose(bank[1], bank[0])


def test_test_time_augmentation_averages_the_eight_orientations():
    torch.manual_seed(0)
    # a small model whose output depends on orientation: a conv trunk and no global symmetry
    model = Classifier(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(), nn.Linear(4, 3))
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[:, 0, :4, :8] = 255  # a bright bar in one corner
    images[:, 1, 3:12, 2] = 200
    cpu = torch.device("cpu")
    by_hand = sum(predict(model, torch.stack([augment_view(i, v, None) for i in images]), cpu) for v in range(8)) / 8
    assert torch.allclose(predict(model, images, cpu, views=8), by_hand, atol=1e-6)
    assert not torch.allclose(predict(model, images, cpu, views=8), predict(model, images, cpu), atol=1e-4)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    attempt = ATTEMPTS[3]
    model, _ = build_classifier("mobilenet_v2", "none", 4, train_levels=attempt.train_levels, head=attempt.head,
                                head_hidden=attempt.head_hidden, head_dropout=attempt.head_dropout)
    with torch.no_grad():
        model.head[-1].bias.add_(torch.tensor([0.0, 1.0, 2.0, 3.0]))  # not the init, so loading must happen
    path = save_checkpoint(tmp_path / "ckpt" / "split_0.pt", {
        "model": model.state_dict(), "epoch": 3, "config": attempt.to_dict(), "arch": "mobilenet_v2",
        "class_names": ["good", "a", "b", "c"]})
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["class_names"] == ["good", "a", "b", "c"]
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    cpu = torch.device("cpu")
    assert torch.equal(predict(classifier_from_checkpoint(checkpoint), images, cpu), predict(model, images, cpu))


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "split_0.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot read checkpoint .*split_0\.pt .*make it again with: python train\.py"):
        load_checkpoint(path)
    torch.save({"model": {}, "arch": "mobilenet_v2"}, path)  # a torch file, but not one train.py wrote
    with pytest.raises(UserError, match=r"split_0\.pt is not a train\.py checkpoint: it has no field 'class_names'"):
        load_checkpoint(path)


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


def test_short_run_from_random_init_beats_chance_on_an_easy_set(tmp_path):
    """A full fine-tune (every level trained) learns: one split is enough to tell it from chance (macro-F1 ~0.33)."""
    make_category(tmp_path, "easy", image_size=48, n_train=24, n_test_good=6, n_per_defect=15,
                  defects=("hole", "stain"), seed=1)
    category = load_category(tmp_path, "easy", progress=False)
    manifest = make_splits(category, n_splits=1, seed=0)
    attempt = replace(ATTEMPTS[2], image_size=48, train_levels=99, epochs=12, batch_size=8, augmented_views=8,
                      early_stopping_patience=None, early_stopping_start=0, lr_backbone=1e-3, lr_head=1e-3,
                      head="linear", head_dropout=0.0, test_time_views=1)
    torch.manual_seed(0)
    result = train_attempt(attempt, category, manifest, arch="resnet18", weights="none",
                           device=torch.device("cpu"), out=tmp_path / "out", cache=DecodeCache(disk=False),
                           progress=False)
    assert result["test"]["macro_f1"]["mean"] > 0.6, result["test"]["macro_f1"]
    assert result["timing"]["images_decoded"] == len(manifest["images"])
