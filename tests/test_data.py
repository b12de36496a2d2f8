"""The data layer: finding a category, class discovery, file filtering and validation problems."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import count_decodes
from PIL import Image

from inspectkit.cache import DecodeCache
from inspectkit.data import list_categories, load_category, locate_category, resolve_data_root
from inspectkit.errors import UserError


def test_classes_and_counts_come_from_folders(synthetic_root):
    category = load_category(synthetic_root, "demo", progress=False)
    assert category.class_names == ["good", "hole", "scratch", "stain"]
    assert category.counts() == {"train": {"good": 12}, "test": {"good": 4, "hole": 4, "scratch": 4, "stain": 4}}
    assert category.problems == []
    assert all(s.mask_path is not None for s in category.samples if s.is_defect)
    assert all(0 < f < 0.5 for f in category.mask_fraction.values())


def test_new_defect_folder_becomes_a_class(editable_root):
    cat = editable_root / "demo"
    shutil.copytree(cat / "test" / "hole", cat / "test" / "dent")
    (cat / "ground_truth" / "dent").mkdir()
    for mask in (cat / "ground_truth" / "hole").iterdir():
        shutil.copy(mask, cat / "ground_truth" / "dent" / mask.name)
    category = load_category(editable_root, "demo", progress=False)
    assert category.defect_classes == ["dent", "hole", "scratch", "stain"]
    assert category.problems == []


def test_data_root_may_be_the_category_folder(synthetic_root):
    name, folder = locate_category(synthetic_root / "demo", None)
    assert (name, folder) == ("demo", synthetic_root / "demo")
    with pytest.raises(UserError, match="category folder 'demo'"):
        locate_category(synthetic_root / "demo", "hazelnut")


def test_data_root_from_environment_then_default(monkeypatch, tmp_path):
    assert str(resolve_data_root(None)) == "data"
    monkeypatch.setenv("MVTEC_ROOT", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root("elsewhere") != tmp_path


def test_unknown_category_lists_the_ones_that_exist(synthetic_root):
    with pytest.raises(UserError, match=r"categories under .*: demo"):
        locate_category(synthetic_root, "hazelnut")
    assert list_categories(synthetic_root) == ["demo"]


def test_missing_root_says_where_it_looked_and_how_to_get_data(tmp_path):
    with pytest.raises(UserError, match=r"does not exist.*--download.*--demo"):
        load_category(tmp_path / "nowhere", "hazelnut")


def test_any_letter_case_extension_counts_and_junk_is_skipped(editable_root):
    good = editable_root / "demo" / "train" / "good"
    Image.open(good / "000.png").save(good / "100.JPG", quality=95)
    Image.open(good / "001.png").save(good / "101.Tiff")
    (good / "002.png").rename(good / "002.PNG")
    for junk in (".DS_Store", "Thumbs.db", "readme.txt"):
        (good / junk).write_bytes(b"junk")
    category = load_category(editable_root, "demo", progress=False)
    assert category.counts()["train"]["good"] == 14
    assert sorted(p.rsplit("/", 1)[1] for p in category.skipped_files) == [".DS_Store", "Thumbs.db", "readme.txt"]


def _problem_for(category, name):
    return [p["problem"] for p in category.problems if p["file"].endswith(name)]


def test_recoverable_problems_are_listed_and_the_rest_is_kept(editable_root):
    cat = editable_root / "demo"
    data = (cat / "train/good/000.png").read_bytes()
    (cat / "train/good/000.png").write_bytes(data[: len(data) // 2])  # truncated
    (cat / "train/good/001.png").write_bytes(b"")  # zero bytes
    (cat / "train/good/002.png").write_bytes(b"not a png at all")  # garbage
    (cat / "ground_truth/hole/000_mask.png").unlink()  # missing mask
    Image.new("L", (10, 10)).save(cat / "ground_truth/hole/001_mask.png")  # wrong size
    Image.open(cat / "test/good/000.png").convert("L").save(cat / "test/good/000.png")  # grey image
    shutil.copy(cat / "ground_truth/stain/000_mask.png", cat / "ground_truth/stain/099_mask.png")  # orphan
    mask = np.asarray(Image.open(cat / "ground_truth/scratch/000_mask.png")).copy()
    mask[mask > 0] = 128
    mask[0, 0] = 255
    Image.fromarray(mask).save(cat / "ground_truth/scratch/000_mask.png")  # three grey levels

    category = load_category(editable_root, "demo", progress=False)
    assert "truncated" in str(_problem_for(category, "train/good/000.png")) or \
        "cannot decode" in _problem_for(category, "train/good/000.png")[0]
    assert "zero-byte" in _problem_for(category, "train/good/001.png")[0]
    assert "cannot decode" in _problem_for(category, "train/good/002.png")[0]
    assert "missing mask" in _problem_for(category, "test/hole/000.png")[0]
    assert "10x10" in _problem_for(category, "hole/001_mask.png")[0]
    assert "mode L" in _problem_for(category, "test/good/000.png")[0]
    assert "orphan" in _problem_for(category, "stain/099_mask.png")[0]
    assert "not binary" in _problem_for(category, "scratch/000_mask.png")[0]
    counts = category.counts()
    assert counts["train"]["good"] == 9 and counts["test"]["hole"] == 4
    holes = {s.path.name: s.mask_path for s in category.samples if s.label == "hole"}
    assert holes["000.png"] is None and holes["001.png"] is None and holes["002.png"] is not None


def test_check_memo_does_not_hide_a_file_that_changed(editable_root):
    assert load_category(editable_root, "demo", progress=False).problems == []
    target = editable_root / "demo/train/good/003.png"
    target.write_bytes(b"broken now")
    category = load_category(editable_root, "demo", progress=False)
    assert _problem_for(category, "train/good/003.png")


def test_non_square_and_mixed_sizes(tmp_path):
    cat = tmp_path / "odd"
    for i, size in enumerate([(80, 60), (80, 60), (50, 70)]):
        (cat / "train/good").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (i * 40, 0, 0)).save(cat / f"train/good/{i}.png")
    (cat / "test/crack").mkdir(parents=True)
    (cat / "ground_truth/crack").mkdir(parents=True)
    Image.new("L", (80, 60), 90).save(cat / "test/crack/0.png")
    mask = np.zeros((60, 80), np.uint8)
    mask[10:20, 30:50] = 255
    Image.fromarray(mask).save(cat / "ground_truth/crack/0_mask.png")
    category = load_category(tmp_path, "odd", progress=False)
    sizes = sorted((i.width, i.height) for i in category.image_info.values())
    assert sizes == [(50, 70), (80, 60), (80, 60), (80, 60)]
    assert category.mask_fraction[cat / "ground_truth/crack/0_mask.png"] == pytest.approx(200 / 4800)


def test_structural_errors_raise(editable_root):
    cat = editable_root / "demo"
    for folder in (cat / "test").iterdir():
        shutil.rmtree(folder)
    with pytest.raises(UserError, match="no test images"):
        load_category(editable_root, "demo", progress=False)
    shutil.rmtree(cat / "train" / "good")
    with pytest.raises(UserError, match="no train/good"):
        load_category(editable_root, "demo", progress=False)


@pytest.mark.parametrize("name", ["../demo", "demo/../../etc", "a/b", "a\\b", "..", ".", "/tmp/demo", "C:demo", ""])
def test_a_category_must_be_a_plain_folder_name(synthetic_root, name):
    with pytest.raises(UserError, match="is not a category folder name"):
        locate_category(synthetic_root, name)


def test_path_like_category_is_refused_even_where_the_folder_exists(editable_root):
    (editable_root / "nested").mkdir()
    shutil.move(editable_root / "demo", editable_root / "nested" / "demo")
    with pytest.raises(UserError, match="not a category folder name"):
        load_category(editable_root, "nested/demo", progress=False)
    with pytest.raises(UserError, match="not a category folder name"):
        load_category(editable_root / "nested" / "demo", "../demo", progress=False)


def test_a_decompression_bomb_and_high_bit_depth_images_in_a_category(editable_root):
    from tests.imagefiles import write_png_claiming

    good = editable_root / "demo/train/good"
    write_png_claiming(good / "000.png", 30000, 30000)
    grey16 = (np.asarray(Image.open(good / "001.png").convert("L")).astype(np.uint16) * 257)
    Image.fromarray(grey16).save(good / "001.png")
    category = load_category(editable_root, "demo", progress=False)
    assert "above the limit" in _problem_for(category, "train/good/000.png")[0]
    assert all(s.path.name != "000.png" for s in category.split_samples("train"))
    assert category.image_info[good / "001.png"].mode == "I;16"  # kept, and its native mode is what is listed


@pytest.mark.parametrize("stored", ["null", "42", '"text"', "[1, 2]", "{not json", '{"version": 2, "entries": 7}',
                                    '{"version": 2, "entries": {"x": null}}', '{"a|1|2": {"width": 3}}'])
def test_a_damaged_check_memo_is_discarded_and_rebuilt(editable_root, stored):
    from inspectkit.cache import cache_root

    memo = cache_root() / "checked_files.json"
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(stored)
    category = load_category(editable_root, "demo", progress=False)
    assert category.problems == [] and category.counts()["train"]["good"] == 12
    assert '"version": 2' in memo.read_text()  # rewritten in the current shape


def test_check_memo_entries_of_the_wrong_shape_are_checked_again(editable_root):
    from inspectkit.cache import cache_root
    from inspectkit.filecheck import CheckMemo

    load_category(editable_root, "demo", progress=False)
    memo = cache_root() / "checked_files.json"
    stored = json.loads(memo.read_text())
    key = CheckMemo.key(editable_root / "demo/train/good/000.png")
    stored["entries"][key] = {"width": "wide", "height": None}
    memo.write_text(json.dumps(stored))
    category = load_category(editable_root, "demo", progress=False)
    assert category.image_info[editable_root / "demo/train/good/000.png"].width == 64


def test_a_permission_failure_is_listed_and_not_remembered(editable_root, monkeypatch):
    import PIL.Image

    target = editable_root / "demo/train/good/004.png"
    real_open = PIL.Image.open

    def open_denying_target(path, *args, **kwargs):
        if str(path) == str(target):
            raise PermissionError(13, "Permission denied", str(path))  # root ignores chmod: deny the read itself
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", open_denying_target)
    category = load_category(editable_root, "demo", progress=False)
    assert "Permission denied" in _problem_for(category, "train/good/004.png")[0]
    assert category.counts()["train"]["good"] == 11
    monkeypatch.setattr(PIL.Image, "open", real_open)  # the file is readable again, with the same size and mtime
    category = load_category(editable_root, "demo", progress=False)
    assert _problem_for(category, "train/good/004.png") == [] and category.counts()["train"]["good"] == 12


def test_an_unreadable_class_folder_is_listed_and_skipped(editable_root, monkeypatch):

    denied = editable_root / "demo/test/scratch"
    real_iterdir = Path.iterdir

    def iterdir_denying(self):
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir_denying)
    category = load_category(editable_root, "demo", progress=False)
    assert "cannot read folder (Permission denied)" in _problem_for(category, "test/scratch")[0]
    assert category.defect_classes == ["hole", "stain"]
    train = editable_root / "demo/train/good"
    denied = train
    with pytest.raises(UserError, match=rf"cannot read {train} \(Permission denied\)"):
        load_category(editable_root, "demo", progress=False)


def test_a_cold_check_and_the_first_model_read_decode_each_file_once(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path / "cache"))  # cold: no check memo, no decoded entries
    counts = count_decodes(monkeypatch)
    seen_sizes = []

    def shape_rule(sizes):
        seen_sizes.append(sorted(sizes))
        return (40, 48)

    category = load_category(synthetic_root, "demo", progress=False, prewarm=shape_rule)
    train = category.split_samples("train")
    assert seen_sizes == [sorted((category.image_info[s.path].width, category.image_info[s.path].height)
                                 for s in train)]
    cache = DecodeCache(memory=False)  # what the detector reads, at the shape the rule chose
    images = {s.path: cache.image(s.path, (40, 48)) for s in category.samples}
    masks = {s.mask_path: cache.mask(s.mask_path, (40, 48)) for s in category.samples if s.mask_path}
    assert cache.decoded == 0 and masks
    assert counts == Counter({path: 1 for path in [*images, *masks]})

    for path, image in images.items():  # the stored entries are a plain decode and resize
        expected = Image.open(path).convert("RGB").resize((48, 40), Image.Resampling.BILINEAR)
        assert image.shape == (40, 48, 3) and np.array_equal(image, np.asarray(expected))
    for path, mask in masks.items():
        expected = np.asarray(Image.open(path).convert("L").resize((48, 40), Image.Resampling.NEAREST)) > 0
        assert mask.shape == (40, 48) and np.array_equal(mask, expected)

    again = load_category(synthetic_root, "demo", progress=False, prewarm=shape_rule)  # the memo skips the check
    assert sum(counts.values()) == len(images) + len(masks) and len(seen_sizes) == 1
    assert again.image_info == category.image_info and again.mask_fraction == category.mask_fraction


def test_prewarm_keeps_every_check_result(editable_root, tmp_path, monkeypatch):
    plain = load_category(editable_root, "demo", progress=False, validate=False)
    (editable_root / "demo/train/good/003.png").write_bytes(b"broken")
    (editable_root / "demo/ground_truth/hole/001_mask.png").write_bytes(b"broken")
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path / "without"))
    without = load_category(editable_root, "demo", progress=False)
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path / "with"))
    with_prewarm = load_category(editable_root, "demo", progress=False, prewarm=32)
    assert with_prewarm.problems == without.problems and len(without.problems) == 2
    assert with_prewarm.samples == without.samples and len(without.samples) == len(plain.samples) - 1
    assert with_prewarm.image_info == without.image_info and with_prewarm.mask_fraction == without.mask_fraction
