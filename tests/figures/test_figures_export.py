"""inspectkit.figures.export: the labels read back from an export (COCO when it has polygons, else YOLO with
YOLO-seg), one panel per defect type, and the figure a PNG that matplotlib reads back, a panel per type wide."""

from __future__ import annotations

import shutil

import pytest
from figure_checks import read_png

from inspectkit.data import load_category
from inspectkit.export import ExportOptions, check_out_dir, export_category
from inspectkit.export.split import new_split
from inspectkit.figures.export import export_labels_figure, one_per_class, read_export


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    """The demo category exported as COCO (polygons), YOLO and YOLO-seg; and its summary."""
    category = load_category(synthetic_root, "demo", progress=False)
    out = tmp_path_factory.mktemp("export") / "demo"
    summary = export_category(category, check_out_dir(out, category.root, False),
                              ExportOptions(formats=("coco", "yolo", "yolo-seg"), min_area=1),
                              new_split(category, 0), {"command": "test"}, progress=False)
    return out, summary


def test_the_export_reads_back_with_every_instance(exported):
    out, summary = exported
    images, source = read_export(out)
    assert source == "coco"
    assert sum(len(im.labels) for im in images) == summary["instances"]["total"]
    assert all(len(im.boxes) == len(im.polygons) == len(im.labels) for im in images)


def test_without_coco_the_yolo_files_are_read_with_the_same_instances(exported, tmp_path):
    out, summary = exported
    copy = tmp_path / "demo"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "coco")
    images, source = read_export(copy)
    assert source == "yolo + yolo-seg"
    assert sum(len(im.labels) for im in images) == summary["instances"]["total"]
    assert any(len(ring) >= 6 for im in images for rings in im.polygons for ring in rings)  # YOLO-seg's polygons
    shutil.rmtree(copy / "yolo")
    with pytest.raises(FileNotFoundError):
        read_export(copy)


def test_the_figure_has_one_panel_per_defect_type(exported, tmp_path):
    out, _ = exported
    images, source = read_export(out)
    picks = one_per_class(images)
    assert [cls for cls, _ in picks] == ["hole", "scratch", "stain"]
    png = read_png(export_labels_figure(images, source, tmp_path / "labels.png"))
    height, width = png.shape[:2]
    assert 0.7 * 1.7 * 150 * len(picks) < width < 1.2 * 1.7 * 150 * len(picks) and height < width
