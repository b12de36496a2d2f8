"""COCO instances JSON per part (``annotations/instances_<part>.json``, images under ``images/<part>/``), for
Mask R-CNN in Detectron2, MMDetection or torchvision; masks as polygons or RLE, ``iscrowd`` 0."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..results import write_json
from ..splits import PARTS
from .build import ExportImage
from .output import ImagePlacer

SEGMENTATIONS = ("polygon", "rle")


def write_coco(root: Path, images: Iterable[ExportImage], class_names: list[str], supercategory: str,
               placer: ImagePlacer, segmentation: str, provenance: dict | None = None) -> dict:
    """Write one COCO JSON per part; ``file_name`` is relative to ``images/<part>/``. Returns counts per part."""
    categories = [{"id": i + 1, "name": name, "supercategory": supercategory} for i, name in enumerate(class_names)]
    category_id = {c["name"]: c["id"] for c in categories}
    parts: dict[str, dict] = {}
    annotation_id = 0
    for image_id, image in enumerate(images, start=1):
        placer.place(image.source, root / "images" / image.part / image.name)
        part = parts.setdefault(image.part, {"images": [], "annotations": []})
        part["images"].append({"id": image_id, "file_name": image.name, "width": image.width,
                               "height": image.height, "source_file": image.file})
        for inst in image.instances:
            annotation_id += 1
            part["annotations"].append({
                "id": annotation_id, "image_id": image_id, "category_id": category_id[inst.label],
                "bbox": list(inst.bbox), "area": inst.area, "iscrowd": 0,
                "segmentation": inst.polygons if segmentation == "polygon" else inst.rle,
            })
    counts = {}
    for name, part in parts.items():
        write_json(root / "annotations" / f"instances_{name}.json", {
            "info": {"description": f"{supercategory} defects exported by inspectkit ({name} part)",
                     "segmentation": segmentation},
            "licenses": [], "images": part["images"], "annotations": part["annotations"],
            "categories": categories, "provenance": provenance})
        counts[name] = {"images": len(part["images"]), "annotations": len(part["annotations"])}
    order = sorted(parts, key=PARTS.index)
    return {"annotations": {name: f"annotations/instances_{name}.json" for name in order},
            "segmentation": segmentation, "parts": {name: counts[name] for name in order}}
