"""What an export holds, for ``results/export_<category>.json``: instances per defect type, images with several
instances, box sizes as fractions of the image, and how faithful the polygons are to the masks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..splits import PARTS
from .build import Collected

COCO_SIZE_LIMITS = (32**2, 96**2)  # COCO's small / medium / large box areas in pixels
REFERENCE_SIZE = 640  # Ultralytics' default training size, for the size classes


def describe(values: Iterable[float]) -> dict:
    """Count, mean and quantiles of a list of numbers (``n`` 0 and nulls when it is empty)."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        return {"n": 0, "mean": None, "min": None, "p25": None, "median": None, "p75": None, "max": None}
    q = np.quantile(array, [0, 0.25, 0.5, 0.75, 1])
    return {"n": int(array.size), "mean": round(float(array.mean()), 6),
            **{k: round(float(v), 6) for k, v in zip(("min", "p25", "median", "p75", "max"), q, strict=True)}}


def _size_class(area_px: float) -> str:
    small, medium = COCO_SIZE_LIMITS
    return "small" if area_px < small else "medium" if area_px < medium else "large"


def summarize(collected: Collected, class_names: list[str]) -> dict:
    """Counts and statistics of the collected images and instances (everything but settings and provenance)."""
    images = collected.images
    rows = [(image, inst) for image in images for inst in image.instances]
    by_class = {name: [(image, inst) for image, inst in rows if inst.label == name] for name in class_names}

    def box_stats(pairs):
        return {"width": describe(inst.bbox[2] / image.width for image, inst in pairs),
                "height": describe(inst.bbox[3] / image.height for image, inst in pairs),
                "area": describe(inst.bbox[2] * inst.bbox[3] / (image.width * image.height) for image, inst in pairs)}

    sizes_at_640 = Counter({"small": 0, "medium": 0, "large": 0})
    for image, inst in rows:
        scale = REFERENCE_SIZE / max(image.width, image.height)
        sizes_at_640[_size_class(inst.bbox[2] * inst.bbox[3] * scale * scale)] += 1

    multiple = [image for image in images if len(image.instances) > 1]
    part_counts = {part: dict(Counter(image.label for image in images if image.part == part)) for part in PARTS}
    return {
        "detector_classes": class_names,  # defect types in label-index order (YOLO class i, COCO id i + 1)
        "images": {
            "exported": len(images),
            "with_instances": sum(1 for image in images if image.instances),
            "background": sum(1 for image in images if not image.instances),
            "background_left_out": collected.background_left_out,
            "per_part": part_counts,
            "with_multiple_instances": len(multiple),
            "with_multiple_instances_per_class": {name: sum(1 for image in multiple if image.label == name)
                                                  for name in class_names},
            "multiple_instance_files": [image.file for image in multiple],
            "skipped": len(collected.skipped),
            "skipped_by_reason": dict(Counter(s["reason"] for s in collected.skipped)),
            "skipped_files": collected.skipped,
        },
        "instances": {
            "total": len(rows),
            "per_class": {name: len(pairs) for name, pairs in by_class.items()},
            "per_part": {part: {name: sum(1 for image, _ in pairs if image.part == part)
                                for name, pairs in by_class.items()} for part in PARTS},
            "per_defect_image": describe(len(image.instances) for image in images if image.instances),
            "regions_below_min_area": collected.dropped_regions,
        },
        "box_size": {
            "unit": "fraction of the image width, height and area",
            "all": box_stats(rows),
            "per_class": {name: box_stats(pairs) for name, pairs in by_class.items()},
            f"coco_size_classes_at_{REFERENCE_SIZE}px": dict(sizes_at_640),
        },
        "mask_area": {
            "unit": "fraction of the image area",
            "all": describe(inst.area / (image.width * image.height) for image, inst in rows),
            "per_class": {name: describe(inst.area / (image.width * image.height) for image, inst in pairs)
                          for name, pairs in by_class.items()},
        },
        "polygon_iou": {
            "what": "IoU of each instance's polygons, rasterised by pycocotools, with its mask region",
            "all": describe(inst.polygon_iou for _, inst in rows),
            "per_class": {name: describe(inst.polygon_iou for _, inst in pairs) for name, pairs in by_class.items()},
            "below_0.95": sum(1 for _, inst in rows if inst.polygon_iou < 0.95),
            "instances_with_holes": sum(1 for _, inst in rows if inst.has_holes),
            "instances_with_several_polygons": sum(1 for _, inst in rows if len(inst.polygons) > 1),
            "points_per_polygon": describe(len(p) // 2 for _, inst in rows for p in inst.polygons),
        },
    }


def summary_text(summary: dict, split_source: str, out: Path, path: Path) -> str:
    """What export_labels.py prints once the export of ``summary`` is in ``out`` and its JSON at ``path``."""
    instances = summary["instances"]
    per_class = ", ".join(f"{name} {n}" for name, n in instances["per_class"].items())
    return (f"{instances['total']} instances ({per_class}) in {summary['images']['with_instances']} defect images, "
            f"{summary['images']['background']} background images; split from {split_source}\n"
            f"wrote {', '.join(summary['settings']['formats'])} to {out} and the summary to {path}")
