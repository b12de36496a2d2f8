"""inspectkit/checkpoints.py: a checkpoint round trip gives the same classifier; a damaged or foreign file, or one
whose weights do not fit the classifier it describes, is a UserError naming it; the layout memo is read-only."""

from __future__ import annotations

import pytest
import torch

from inspectkit.attempts import ATTEMPTS
from inspectkit.checkpoints import (
    _model_layout,
    checkpoint_path,
    classifier_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from inspectkit.classifier import build_classifier
from inspectkit.errors import UserError
from inspectkit.inference import predict

CLASSES = ["good", "a", "b", "c"]


def _checkpoint(attempt=ATTEMPTS[3], classes=CLASSES):
    model, _ = build_classifier("mobilenet_v2", "none", len(classes), train_levels=attempt.train_levels,
                                head=attempt.head, head_hidden=attempt.head_hidden, head_dropout=attempt.head_dropout)
    with torch.no_grad():
        model.head[-1].bias.add_(torch.arange(len(classes), dtype=torch.float))  # not the init: loading must happen
    return model, {"model": model.state_dict(), "epoch": 3, "config": attempt.to_dict(), "arch": "mobilenet_v2",
                   "class_names": list(classes)}


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    model, checkpoint = _checkpoint()
    path = save_checkpoint(checkpoint_path(tmp_path, 3, 0), checkpoint)
    assert path == tmp_path / "checkpoints" / "attempt_3" / "split_0.pt"
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["class_names"] == CLASSES
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    cpu = torch.device("cpu")
    assert torch.equal(predict(classifier_from_checkpoint(loaded), images, cpu), predict(model, images, cpu))


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "split_0.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot read checkpoint .*split_0\.pt .*make it again with: python train\.py"):
        load_checkpoint(path)
    torch.save({"model": {}, "arch": "mobilenet_v2"}, path)  # a torch file, but not one train.py wrote
    with pytest.raises(UserError, match=r"split_0\.pt is not a train\.py checkpoint: it has no field 'class_names'"):
        load_checkpoint(path)


def test_weights_for_another_class_count_are_refused_by_name(tmp_path):
    _, checkpoint = _checkpoint()
    checkpoint["class_names"] = CLASSES[:3]  # the head still has 4 outputs
    path = save_checkpoint(tmp_path / "split_0.pt", checkpoint)
    with pytest.raises(UserError, match=r"split_0\.pt is damaged \(weight head\.\S+ is torch\.float32 \(4"):
        load_checkpoint(path, remake="python train.py --attempt 3")


def test_the_layout_memo_cannot_be_changed_by_a_caller():
    attempt = ATTEMPTS[3]
    args = ("mobilenet_v2", 4, attempt.train_levels, attempt.head, attempt.head_hidden, attempt.head_dropout)
    layout = _model_layout(*args)
    with pytest.raises(TypeError):
        layout["head.4.bias"] = ((5,), torch.float32)
    assert _model_layout(*args)["head.4.bias"] == ((4,), torch.float32)
