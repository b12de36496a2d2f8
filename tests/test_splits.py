"""Pooled stratified splits: every image once per split, each class in every part, no content overlap."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.splits import check_no_overlap, make_splits


def test_splits_pool_everything_stratify_and_do_not_overlap(synthetic_root):
    category = load_category(synthetic_root, "demo", progress=False)
    manifest = make_splits(category, n_splits=3, seed=7)
    assert manifest["class_names"] == ["good", "hole", "scratch", "stain"]
    files = {img["file"] for img in manifest["images"]}
    assert len(files) == 28 and any(f.startswith("train/good/") for f in files)
    label = {img["file"]: img["label"] for img in manifest["images"]}
    assert [s["seed"] for s in manifest["splits"]] == [7, 8, 9]
    for split in manifest["splits"]:
        parts = [split["train"], split["val"], split["test"]]
        assert sorted(f for part in parts for f in part) == sorted(files)
        for part in parts:
            assert set(Counter(label[f] for f in part)) == set(manifest["class_names"])
        assert len(split["test"]) == pytest.approx(0.2 * 28, abs=2)
    assert manifest["splits"][0]["test"] != manifest["splits"][1]["test"]
    assert make_splits(category, n_splits=3, seed=7) == manifest  # same seed, same splits
    check_no_overlap(manifest)


def test_overlap_by_content_is_caught(synthetic_root):
    manifest = make_splits(load_category(synthetic_root, "demo", progress=False), n_splits=1, seed=0)
    test_file, train_file = manifest["splits"][0]["test"][0], manifest["splits"][0]["train"][0]
    digest = {img["file"]: img["sha256"] for img in manifest["images"]}
    for img in manifest["images"]:
        if img["file"] == train_file:
            img["sha256"] = digest[test_file]
    with pytest.raises(ValueError, match="both test and train"):
        check_no_overlap(manifest)


def test_duplicate_content_is_dropped_and_recorded(editable_root):
    shutil.copy(editable_root / "demo/train/good/000.png", editable_root / "demo/train/good/copy.png")
    manifest = make_splits(load_category(editable_root, "demo", progress=False), n_splits=2, seed=0)
    assert len(manifest["images"]) == 28
    assert any("train/good/copy.png" in a and "same content" in a for a in manifest["adjustments"])


def test_a_class_too_small_to_stratify_is_a_user_error(editable_root):
    for extra in sorted((editable_root / "demo/test/hole").iterdir())[2:]:
        extra.unlink()
        (editable_root / "demo/ground_truth/hole" / f"{extra.stem}_mask.png").unlink()
    with pytest.raises(UserError, match=r"hole \(2\)"):
        make_splits(load_category(editable_root, "demo", progress=False), n_splits=1, seed=0)
