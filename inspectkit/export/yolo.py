"""Ultralytics YOLO datasets: ``images/<part>/``, ``labels/<part>/`` with one ``.txt`` per image, and ``dataset.yaml``.

Detection rows are ``class cx cy w h``; segmentation rows are ``class x1 y1 x2 y2 ...`` (an instance's largest
outer polygon). All coordinates are normalised to 0-1. Background images get empty label files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import yaml

from ..splits import PARTS
from .build import ExportImage
from .output import ImagePlacer


def detection_row(class_index: int, bbox: tuple[int, int, int, int], width: int, height: int) -> str:
    x, y, w, h = bbox
    return f"{class_index} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}"


def segmentation_row(class_index: int, polygon: list[float], width: int, height: int) -> str:
    coords = [min(max(v / (width if i % 2 == 0 else height), 0.0), 1.0) for i, v in enumerate(polygon)]
    return f"{class_index} " + " ".join(f"{v:.6f}" for v in coords)


def write_yolo(root: Path, final_root: Path, images: Iterable[ExportImage], class_names: list[str],
               placer: ImagePlacer, *, segment: bool) -> dict:
    """Write one YOLO dataset (detection, or segmentation with ``segment``) and return what it holds."""
    index = {name: i for i, name in enumerate(class_names)}
    per_part: Counter[str] = Counter()
    rows = 0
    for image in images:
        placer.place(image.source, root / "images" / image.part / image.name)
        if segment:
            lines = [segmentation_row(index[inst.label], inst.polygons[0], image.width, image.height)
                     for inst in image.instances]
        else:
            lines = [detection_row(index[inst.label], inst.bbox, image.width, image.height)
                     for inst in image.instances]
        label_file = root / "labels" / image.part / f"{image.stem}.txt"
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(f"{line}\n" for line in lines))
        per_part[image.part] += 1
        rows += len(lines)
    parts = [part for part in PARTS if per_part[part]]
    dataset = {"path": str(final_root), **{part: f"images/{part}" for part in parts},
               "names": dict(enumerate(class_names))}
    (root / "dataset.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    return {"yaml": "dataset.yaml", "task": "segment" if segment else "detect",
            "images": {part: per_part[part] for part in parts}, "label_rows": rows}
