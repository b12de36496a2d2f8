"""Export file names are unique by construction: flattening ``a__b/c.png`` and ``a/b__c.png``, or resizing
``000.jpg`` beside ``000.png``, never makes one image replace another."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectkit.data import load_category
from inspectkit.export import ExportOptions, check_out_dir, export_category
from inspectkit.export.build import ExportImage, check_unique_names, export_name
from inspectkit.export.split import new_split

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


@pytest.mark.parametrize("a, b", [("test/a__b/c.png", "test/a/b__c.png"), ("test/a_/b.png", "test/a/_b.png"),
                                  ("test/x/000%5F%5F.png", "test/x/000__.png"), ("test/x/a.png", "test/x/a.jpg")])
def test_names_that_flattened_alike_now_differ(a, b):
    assert export_name(a, resized=False) != export_name(b, resized=False)
    assert export_name(a, resized=True) != export_name(b, resized=True)


def test_ordinary_names_are_unchanged():
    assert export_name("test/broken_large/000.png", resized=False) == "test__broken_large__000.png"
    assert export_name("train/good/001.png", resized=True) == "train__good__001.png"
    assert export_name("test/crack/001.JPG", resized=True) == "test__crack__001%2EJPG.png"
    assert export_name("test/crack/001.jpg", resized=False) == "test__crack__001%2Ejpg.jpg"


def test_the_export_checks_its_names():
    first = ExportImage("test/a/1.png", None, "a", "train", "same.png", 1, 1)
    second = ExportImage("test/b/1.png", None, "b", "train", "same.jpg", 1, 1)  # same stem: same YOLO label file
    with pytest.raises(ValueError, match=r"export names collide: test/a/1\.png and test/b/1\.png"):
        check_unique_names([first, second])


def _add_defect(cat: Path, cls: str, name: str, source: Path, tweak: int) -> None:
    """A copy of ``source`` (and its mask) as test/<cls>/<name>, one pixel changed so its content is new."""
    for folder in (cat / "test" / cls, cat / "ground_truth" / cls):
        folder.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(Image.open(source).convert("RGB")).copy()
    pixels[0, 0] = (tweak, 255 - tweak, 7)
    Image.fromarray(pixels).save(cat / "test" / cls / name)
    shutil.copy(cat / "ground_truth" / source.parent.name / f"{source.stem}_mask.png",
                cat / "ground_truth" / cls / f"{Path(name).stem}_mask.png")


@pytest.mark.parametrize("imgsz", [None, 48])
def test_colliding_paths_export_every_image_in_every_format(editable_root, tmp_path, imgsz):
    cat = editable_root / "demo"
    hole = cat / "test" / "hole"
    for k, (cls, name) in enumerate([("a__b", "c.png"), ("a__b", "d.png"), ("a__b", "e.png"),
                                     ("a", "b__c.png"), ("a", "b__d.png"), ("a", "b__e.png")]):
        _add_defect(cat, cls, name, hole / f"00{k % 4}.png", tweak=10 * k + 1)
    Image.open(hole / "002.png").convert("RGB").save(hole / "002.jpg", quality=95)  # 002.jpg beside 002.png
    category = load_category(editable_root, "demo", progress=False)
    out = tmp_path / "export"
    summary = export_category(category, check_out_dir(out, category.root, False),
                              ExportOptions(formats=("yolo", "coco"), imgsz=imgsz, min_area=1), new_split(category, 0),
                              {"command": "test"}, progress=False)
    exported = summary["images"]["with_instances"] + summary["images"]["background"]
    assert exported == len(category.samples)  # the 002 pair, a__b/c and a/b__c too
    for fmt in ("yolo", "coco"):
        files = [p for p in (out / fmt).rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")]
        assert len(files) == exported == len({p.name for p in files}), fmt
    names = {p.name for p in (out / "yolo").rglob("*") if p.suffix in (".png", ".jpg")}
    for file in ("test/a__b/c.png", "test/a/b__c.png", "test/hole/002.png", "test/hole/002.jpg"):
        assert export_name(file, bool(imgsz)) in names
    labels = list((out / "yolo" / "labels").rglob("*.txt"))  # one per image, empty for a background image
    assert len(labels) == len({p.name for p in labels}) == exported


@pytest.mark.parametrize("content, says", [("", "it is empty"), ("null", "it holds null"),
                                           ('{"category": "demo", "images": [], "splits": []}', "it has no splits"),
                                           ('{"category": "other", "images": [], "splits": []}',
                                            "it is for category 'other', not 'demo'"),
                                           ('{"category": "demo", "images": [7], "splits": [{"train": [], "val": [],'
                                            ' "test": []}]}', "image entry 0: it holds int")])
def test_a_damaged_split_manifest_names_itself_and_how_to_remake_it(content, says, synthetic_root, tmp_path):
    from inspectkit.errors import UserError
    from inspectkit.export.split import load_manifest_split

    path = tmp_path / "splits_demo.json"
    path.write_text(content)
    with pytest.raises(UserError) as caught:
        load_manifest_split(path, load_category(synthetic_root, "demo", progress=False))
    message = str(caught.value)
    assert str(path) in message and says in message and "python train.py --category demo" in message
