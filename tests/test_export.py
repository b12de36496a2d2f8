"""The label export library: instances from masks, and every format checked with the libraries that read it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from skimage import measure

from inspectkit.data import load_category
from inspectkit.errors import UserError
from inspectkit.export import ExportOptions, check_out_dir, export_category
from inspectkit.export.instances import mask_instances, polygon_area
from inspectkit.export.output import staged_dir
from inspectkit.export.sam import jitter_box, sample_points
from inspectkit.export.split import choose_split, load_manifest_split, new_split
from inspectkit.results import write_json
from inspectkit.splits import make_splits

PROVENANCE = {"command": "test", "seed": 0}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")  # its numpy 2 copy= notice


def _export(category, out: Path, **options) -> dict:
    split = new_split(category, options.get("seed", 0))
    return export_category(category, check_out_dir(out, category.root, False), ExportOptions(**options), split,
                           PROVENANCE, progress=False)


@pytest.fixture(scope="module")
def category(synthetic_root):
    return load_category(synthetic_root, "demo", progress=False)


@pytest.fixture(scope="module")
def export(category, tmp_path_factory):
    """One export of the synthetic category in every format, with default options."""
    out = tmp_path_factory.mktemp("export") / "demo"
    return out, _export(category, out)


def _gt_mask(category, source_file: str, shape=None) -> np.ndarray:
    path = Path(source_file)
    mask = Image.open(category.root / "ground_truth" / path.parts[1] / f"{path.stem}_mask.png").convert("L")
    if shape is not None:
        mask = mask.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(mask) > 0


def _gt_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """x0, y0, x1, y1 (pixel edges) of each 8-connected region, found with skimage (not the export's code)."""
    regions = measure.regionprops(measure.label(mask, connectivity=2))
    return sorted((r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regions)


def _yolo_boxes(label_file: Path, width: int, height: int) -> list[tuple[float, ...]]:
    boxes = []
    for line in label_file.read_text().splitlines():
        _, cx, cy, w, h = (float(v) for v in line.split())
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return sorted(boxes)


# --- instances from masks -------------------------------------------------------------------------------------

def test_components_become_instances_with_boxes_areas_rle_and_holes():
    mask = np.zeros((40, 50), dtype=bool)
    mask[2:7, 3:10] = True  # 5 x 7 block
    mask[20:30, 20:30] = True
    mask[24:26, 24:26] = False  # a ring: 100 - 4 pixels, with a hole
    mask[38, 48] = True  # one-pixel speck
    mask[7, 10] = True  # touches the block only diagonally: same 8-connected region
    instances, dropped = mask_instances(mask, "scratch", min_area=2)
    assert dropped == 1
    assert [(i.bbox, i.area) for i in instances] == [((3, 2, 8, 6), 36), ((20, 20, 10, 10), 96)]
    block, ring = instances
    assert not block.has_holes and ring.has_holes
    expected = np.zeros_like(mask)
    expected[2:7, 3:10] = True
    expected[7, 10] = True
    assert np.array_equal(block.mask(), expected)
    assert mask_utils.area(mask_utils.frPyObjects([block.polygons[0]], 40, 50)).sum() > 0
    assert block.polygon_iou == pytest.approx(1.0)
    assert ring.polygon_iou == pytest.approx(96 / 100)  # polygons trace the outer edge; the hole is filled


def test_polygons_are_exact_for_blobs_touching_the_border():
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:12, 22:30] = True
    mask[12:15, 25:30] = True
    (instance,), _ = mask_instances(mask, "x")
    xs, ys = instance.polygons[0][0::2], instance.polygons[0][1::2]
    assert min(xs) == 22 and max(xs) == 30 and min(ys) == 0 and max(ys) == 15  # pixel edges, inside the image
    assert instance.polygon_iou == 1.0


def test_simplification_never_collapses_a_thin_line():
    mask = np.zeros((20, 60), dtype=bool)
    mask[10, 5:55] = True
    (instance,), _ = mask_instances(mask, "scratch", polygon_tolerance=5.0)
    assert len(instance.polygons[0]) >= 6 and polygon_area(instance.polygons[0]) > 0


# --- COCO, checked with pycocotools ---------------------------------------------------------------------------

def test_coco_rle_gives_back_the_ground_truth_exactly(category, tmp_path):
    out = tmp_path / "rle"
    _export(category, out, formats=("coco",), coco_segmentation="rle", min_area=1)
    checked = 0
    for part in ("train", "val", "test"):
        coco = COCO(str(out / "coco" / "annotations" / f"instances_{part}.json"))
        for image in coco.dataset["images"]:
            assert (out / "coco" / "images" / part / image["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            if "good" in image["source_file"]:
                assert anns == []
                continue
            union = np.zeros((image["height"], image["width"]), dtype=bool)
            for ann in anns:
                union |= coco.annToMask(ann).astype(bool)
            assert np.array_equal(union, _gt_mask(category, image["source_file"]))
            checked += 1
    assert checked == 12  # every defect image of the synthetic category


def test_coco_polygons_match_each_instance_with_iou_at_least_095(category, export, tmp_path):
    out, _ = export
    rle_out = tmp_path / "rle"
    _export(category, rle_out, formats=("coco",), coco_segmentation="rle")
    ious = []
    for part in ("train", "val", "test"):
        polygons = COCO(str(out / "coco" / "annotations" / f"instances_{part}.json"))
        exact = COCO(str(rle_out / "coco" / "annotations" / f"instances_{part}.json"))
        for ann_id in polygons.getAnnIds():
            poly_ann, rle_ann = polygons.loadAnns(ann_id)[0], exact.loadAnns(ann_id)[0]
            assert isinstance(poly_ann["segmentation"], list) and poly_ann["iscrowd"] == 0
            a, b = polygons.annToMask(poly_ann).astype(bool), exact.annToMask(rle_ann).astype(bool)
            ious.append((a & b).sum() / (a | b).sum())
            x, y, w, h = poly_ann["bbox"]
            ys, xs = np.nonzero(b)
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert poly_ann["area"] == b.sum()
    assert len(ious) == 15 and min(ious) >= 0.95


# --- YOLO and YOLO-seg ----------------------------------------------------------------------------------------

def test_yolo_boxes_equal_the_mask_bounding_boxes(category, export):
    out, summary = export
    root = out / "yolo"
    images = sorted((root / "images").glob("*/*.png"))
    assert len(images) == summary["images"]["exported"] == 28
    defect_files = 0
    for image in images:
        label_file = root / "labels" / image.parent.name / f"{image.stem}.txt"
        width, height = Image.open(image).size
        source = image.stem.replace("__", "/") + ".png"
        if "__good__" in image.name:
            assert label_file.read_text() == ""  # a background image
            continue
        defect_files += 1
        got, want = _yolo_boxes(label_file, width, height), _gt_boxes(_gt_mask(category, source))
        assert len(got) == len(want)
        assert np.allclose(got, want, atol=1.0)
    assert defect_files == 12


def test_yolo_seg_polygons_are_valid_and_agree_with_the_boxes(export):
    out, summary = export
    rows = 0
    for seg_file in sorted((out / "yolo-seg" / "labels").glob("*/*.txt")):
        det_file = out / "yolo" / "labels" / seg_file.parent.name / seg_file.name
        boxes = [[float(v) for v in line.split()[1:]] for line in det_file.read_text().splitlines()]
        for line, (cx, cy, w, h) in zip(seg_file.read_text().splitlines(), boxes, strict=True):
            cls, *coords = line.split()
            xy = np.asarray(coords, dtype=float).reshape(-1, 2)
            assert int(cls) in range(3) and len(xy) >= 3
            assert xy.min() >= 0 and xy.max() <= 1
            assert polygon_area(xy.ravel().tolist()) > 0
            assert xy[:, 0].min() == pytest.approx(cx - w / 2, abs=1 / 64)
            assert xy[:, 1].max() == pytest.approx(cy + h / 2, abs=1 / 64)
            rows += 1
    assert rows == summary["instances"]["total"]


def test_dataset_yaml_names_parts_and_classes(export):
    out, _ = export
    for fmt in ("yolo", "yolo-seg"):
        dataset = yaml.safe_load((out / fmt / "dataset.yaml").read_text())
        assert Path(dataset["path"]) == out / fmt
        assert dataset["names"] == {0: "hole", 1: "scratch", 2: "stain"}
        for part in ("train", "val", "test"):
            assert any((out / fmt / dataset[part]).iterdir())


# --- SAM ------------------------------------------------------------------------------------------------------

def test_sam_lines_have_masks_boxes_and_points_on_the_right_side(export):
    out, summary = export
    lines = [json.loads(line) for part in ("train", "val", "test") for line in
             (out / "sam" / f"{part}.jsonl").read_text().splitlines()]
    assert len(lines) == summary["instances"]["total"]
    for line in lines:
        mask = np.asarray(Image.open(out / "sam" / line["mask"])) > 0
        assert (out / "sam" / line["image"]).is_file()
        ys, xs = np.nonzero(mask)
        assert line["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == line["box_prompt"]
        assert line["point_labels"] == [1, 1, 1, 0]
        for (x, y), positive in zip(line["points"], line["point_labels"], strict=True):
            assert mask[int(y), int(x)] == bool(positive)


def test_sam_prompts_are_seeded_and_jitter_stays_in_the_image():
    mask = np.zeros((50, 50), dtype=bool)
    mask[10:30, 15:40] = True
    box = (15, 10, 40, 30)
    first = sample_points(mask, box, 5, 2, np.random.default_rng([0, 1]))
    assert first == sample_points(mask, box, 5, 2, np.random.default_rng([0, 1]))
    assert first != sample_points(mask, box, 5, 2, np.random.default_rng([1, 1]))
    for seed in range(20):
        x0, y0, x1, y1 = jitter_box(box, 0.5, 50, 50, np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 50
    assert jitter_box(box, 0.2, 50, 50, np.random.default_rng(0)) != list(box)


# --- splits ---------------------------------------------------------------------------------------------------

def _parts_of(out: Path) -> dict[str, str]:
    return {p.stem.replace("__", "/") + ".png": p.parent.name for p in (out / "yolo" / "images").glob("*/*.png")}


def test_a_new_split_is_saved_and_equals_train_py_split_zero(category, export):
    out, summary = export
    saved = json.loads((out / "splits_demo.json").read_text())
    assert summary["split"]["source"] == "new" and "provenance" in saved
    reference = make_splits(category, 1, 0)["splits"][0]
    assert saved["splits"][0] == reference
    assert _parts_of(out) == {f: part for part in ("train", "val", "test") for f in reference[part]}


def test_an_existing_manifest_is_reused_and_checked_by_hash(category, editable_root, tmp_path):
    manifest = make_splits(category, 2, 7)
    path = write_json(tmp_path / "splits_demo.json", manifest)
    choice = choose_split(category, path, seed=0)
    assert choice.source == str(path) and choice.manifest is None
    assert choice.part_of == {f: p for p in ("train", "val", "test") for f in manifest["splits"][0][p]}

    out = tmp_path / "export"
    export_category(category, check_out_dir(out, category.root, False), ExportOptions(formats=("yolo",)), choice,
                    PROVENANCE, progress=False)
    assert _parts_of(out) == choice.part_of and not (out / "splits_demo.json").exists()

    Image.new("RGB", (64, 64)).save(editable_root / "demo/test/good/000.png")
    with pytest.raises(UserError, match="changed since"):
        load_manifest_split(path, load_category(editable_root, "demo", progress=False))


# --- resizing, links, background, the output folder -----------------------------------------------------------

def test_imgsz_resizes_images_and_labels_together(category, tmp_path):
    out = tmp_path / "small"
    summary = _export(category, out, formats=("yolo",), imgsz=32, min_area=1)
    for label_file in (out / "yolo" / "labels").glob("*/*.txt"):
        image = out / "yolo" / "images" / label_file.parent.name / f"{label_file.stem}.png"
        assert Image.open(image).size == (32, 32)
        if "__good__" not in image.name:
            source = label_file.stem.replace("__", "/") + ".png"
            got = _yolo_boxes(label_file, 32, 32)
            assert np.allclose(got, _gt_boxes(_gt_mask(category, source, (32, 32))), atol=1.0)
    assert summary["settings"]["imgsz"] == 32


def test_links_and_leaving_out_background(category, tmp_path):
    _export(category, tmp_path / "sym", formats=("yolo", "coco"), link="sym", background=False)
    images = list((tmp_path / "sym").glob("*/images/*/*.png"))
    assert images and all(p.is_symlink() and p.resolve().is_relative_to(category.root.resolve()) for p in images)
    assert not any("__good__" in p.name for p in images)

    _export(category, tmp_path / "hard", formats=("sam",), link="hard")
    linked = next((tmp_path / "hard" / "sam" / "images").glob("*/*.png"))
    source = category.root / (linked.stem.replace("__", "/") + ".png")
    assert not linked.is_symlink() and linked.stat().st_ino == source.stat().st_ino

    _export(category, tmp_path / "copy", formats=("yolo", "yolo-seg"))
    first = next((tmp_path / "copy" / "yolo" / "images").glob("*/*.png"))
    second = tmp_path / "copy" / "yolo-seg" / "images" / first.parent.name / first.name
    assert not first.is_symlink() and first.stat().st_ino == second.stat().st_ino  # one copy, linked


def test_a_failed_build_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(target) as stage:
        (stage / "half.txt").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "keep.txt").read_text() == "old"


def test_summary_counts_add_up(export):
    out, summary = export
    assert summary["instances"]["per_class"] == {"hole": 4, "scratch": 7, "stain": 4}
    assert sum(summary["instances"]["per_class"].values()) == summary["instances"]["total"] == 15
    multiple = [p for p in (out / "yolo" / "labels").glob("*/*.txt") if len(p.read_text().splitlines()) > 1]
    assert summary["images"]["with_multiple_instances"] == len(multiple) == 3
    box = summary["box_size"]["all"]
    assert 0 < box["area"]["min"] <= box["area"]["median"] <= box["area"]["max"] < 1
    assert summary["polygon_iou"]["all"]["min"] >= 0.95
    assert summary["provenance"] == PROVENANCE
    assert json.loads((out / "export_summary.json").read_text())["instances"] == summary["instances"]
