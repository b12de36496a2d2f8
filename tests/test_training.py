"""inspectkit/training.py: a short run that must learn an easy synthetic set, and what one run shares between
attempts (the trained classifier of an equal recipe, never retrained)."""

from __future__ import annotations

from dataclasses import replace

import torch

import inspectkit.training
from inspectkit.attempts import ATTEMPTS
from inspectkit.cache import DecodeCache
from inspectkit.data import load_category
from inspectkit.splits import make_splits
from inspectkit.synthetic import make_category
from inspectkit.training import train_attempt


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
    split = result["splits"][0]
    assert split["epochs_run"] == 12 and len(split["curves"]["lr_head"]) == 12
    assert result["timing"]["train_images_per_s"] > 0


def test_an_attempt_that_differs_only_in_naming_reuses_the_trained_classifier(tmp_path, monkeypatch):
    """Attempts with equal classifier recipes (here: only the name differs) train once per split within one run,
    and the second one's checkpoint holds the same weights."""
    epochs = []
    real = inspectkit.training.train_one_epoch

    def counting(*args, **kwargs):  # the real epoch, counted
        epochs.append(kwargs.get("desc") or args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(inspectkit.training, "train_one_epoch", counting)
    make_category(tmp_path, "tiny", image_size=32, n_train=8, n_test_good=6, n_per_defect=6, defects=("hole",),
                  seed=2)
    category = load_category(tmp_path, "tiny", progress=False)
    manifest = make_splits(category, n_splits=2, seed=0)
    first = replace(ATTEMPTS[1], image_size=32, epochs=2)
    renamed = replace(first, number=5, name="renamed", what_changed="nothing that trains")
    banks: dict = {}
    results = [train_attempt(a, category, manifest, arch="mobilenet_v2", weights="none", device=torch.device("cpu"),
                             out=tmp_path / "out", cache=DecodeCache(disk=False), banks=banks, progress=False)
               for a in (first, renamed)]
    assert len(epochs) == 2 * 2  # 2 splits x 2 epochs, for the first attempt only
    assert results[0]["test"]["macro_f1"]["values"] == results[1]["test"]["macro_f1"]["values"]
    for k in range(2):
        a, b = (torch.load(tmp_path / "out" / "checkpoints" / f"attempt_{n}" / f"split_{k}.pt", weights_only=True)
                for n in (1, 5))
        assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
        assert b["config"]["name"] == "renamed"
