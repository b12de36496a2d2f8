"""The Q5 figure: one exported image per defect type with its boxes and polygons drawn over it, read back from the
export files themselves (COCO, else YOLO with YOLO-seg), so the figure shows what the export holds; and finding the
export that ``export_<category>.json`` describes, to draw it (or keep the one drawn earlier) for the report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Polygon, Rectangle
from PIL import Image

from ..imageio import open_image
from ..results import REPO_ROOT, read_json
from . import save_figure

PANEL_PIXELS = 320  # longer side of each drawn image; the export's coordinates are scaled to it


@dataclass
class LabelledImage:
    """One exported image and the instances its label files give it, in the image's pixel coordinates."""

    path: Path
    part: str
    width: int
    height: int
    labels: list[str] = field(default_factory=list)  # one class name per instance
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # x, y, w, h
    polygons: list[list[list[float]]] = field(default_factory=list)  # per instance: rings of x1 y1 x2 y2 ...


def read_coco(coco_dir: Path) -> list[LabelledImage]:
    """Every image with instances in ``coco_dir/annotations/instances_<part>.json``, polygons or not (RLE)."""
    from ..splits import PARTS  # here, not at the top: the splits module loads the data layer and torch

    images = []
    for part in PARTS:
        path = coco_dir / "annotations" / f"instances_{part}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in data["categories"]}
        by_id = {im["id"]: LabelledImage(coco_dir / "images" / part / im["file_name"], part, im["width"],
                                         im["height"]) for im in data["images"]}
        for ann in data["annotations"]:
            image = by_id[ann["image_id"]]
            image.labels.append(names[ann["category_id"]])
            image.boxes.append(tuple(ann["bbox"]))
            rings = ann["segmentation"] if isinstance(ann["segmentation"], list) else []  # a dict is RLE
            image.polygons.append(rings)
        images += [im for im in by_id.values() if im.labels]
    return images


def _rows(label_file: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in label_file.read_text(encoding="utf-8").splitlines() if line]


def read_yolo(yolo_dir: Path, seg_dir: Path | None) -> list[LabelledImage]:
    """Every image with instances in a YOLO detect dataset, with the polygons of the YOLO-seg one when given
    (both exports write an image's instances in the same order)."""
    import yaml

    from ..splits import PARTS

    names = yaml.safe_load((yolo_dir / "dataset.yaml").read_text(encoding="utf-8"))["names"]
    images = []
    for part in PARTS:
        for label_file in sorted((yolo_dir / "labels" / part).glob("*.txt")):
            rows = _rows(label_file)
            candidates = sorted((yolo_dir / "images" / part).glob(f"{label_file.stem}.*"))
            if not rows or not candidates:
                continue
            with Image.open(candidates[0]) as im:
                width, height = im.size
            image = LabelledImage(candidates[0], part, width, height)
            seg_file = seg_dir / "labels" / part / label_file.name if seg_dir else None
            seg_rows = _rows(seg_file) if seg_file and seg_file.is_file() else []
            for i, (cls, cx, cy, w, h) in enumerate(rows):
                image.labels.append(names[int(cls)])
                image.boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))
                ring = seg_rows[i][1:] if i < len(seg_rows) else []
                image.polygons.append([[v * (width if j % 2 == 0 else height) for j, v in enumerate(ring)]])
            images.append(image)
    return images


def read_export(export_dir: Path) -> tuple[list[LabelledImage], str]:
    """The labelled images of an export folder and which files they came from: COCO when it holds polygons,
    else YOLO (with YOLO-seg's polygons when present), else COCO's boxes alone. FileNotFoundError if none."""
    coco = read_coco(export_dir / "coco") if (export_dir / "coco" / "annotations").is_dir() else []
    if coco and any(rings for im in coco for rings in im.polygons):
        return coco, "coco"
    if (export_dir / "yolo" / "dataset.yaml").is_file():
        seg = export_dir / "yolo-seg" if (export_dir / "yolo-seg" / "dataset.yaml").is_file() else None
        return read_yolo(export_dir / "yolo", seg), "yolo + yolo-seg" if seg else "yolo"
    if coco:
        return coco, "coco"
    raise FileNotFoundError(f"no COCO or YOLO export in {export_dir}")


def one_per_class(images: list[LabelledImage]) -> list[tuple[str, LabelledImage]]:
    """For each defect type, in name order, the image with the most instances of it (the first such, in part
    and file order), so multi-instance images show when there are any."""
    picks = []
    for cls in sorted({label for im in images for label in im.labels}):
        picks.append((cls, max(images, key=lambda im: im.labels.count(cls))))
    return picks


def export_labels_figure(images: list[LabelledImage], source: str, path: str | os.PathLike) -> Path:
    """One panel per defect type: the exported image, each instance's box (dashed) and polygon (filled)."""
    picks = one_per_class(images)
    fig, axes = plt.subplots(1, len(picks), figsize=(1.7 * len(picks), 1.95), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, (cls, image) in zip(axes[0], picks, strict=True):
        im = open_image(image.path).convert("RGB")  # a 16-bit export (copied as is) scaled, not clipped
        scale = PANEL_PIXELS / max(im.size)
        shown = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
        scale_x, scale_y = shown.width / image.width, shown.height / image.height
        ax.imshow(np.asarray(shown))
        for i, (label, box, rings) in enumerate(zip(image.labels, image.boxes, image.polygons, strict=True)):
            colour = colours[i % len(colours)]
            x, y, w, h = box
            ax.add_patch(Rectangle((x * scale_x, y * scale_y), w * scale_x, h * scale_y, fill=False,
                                   edgecolor=colour, linewidth=1.0, linestyle="--"))
            for ring in rings:
                points = np.asarray(ring, dtype=float).reshape(-1, 2) * (scale_x, scale_y)
                if len(points) >= 3:
                    ax.add_patch(Polygon(points, closed=True, facecolor=(*colour, 0.35), edgecolor=colour,
                                         linewidth=0.8))
            if label != cls:  # an instance of another type in the same image: name it at its box
                ax.text(x * scale_x, y * scale_y, label, fontsize=5, color=colour, va="bottom")
        n = image.labels.count(cls)
        ax.set_title(f"{cls.replace('_', ' ')}: {n} instance{'s' if n != 1 else ''}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"labels read back from the exported {source.upper()} files: boxes dashed, polygons filled",
                 fontsize=7, y=0.99)
    return save_figure(fig, path)


def export_figure_name(category: str) -> str:
    """The Q5 figure's file name under <results>/figures/."""
    return f"export_{category}_labels.png"


def find_export_dir(record: dict) -> Path | None:
    """The folder ``export_<category>.json`` (``record``) says it exported to, if it is on this machine and still
    holds that export (its summary has the same provenance); relative paths are tried from here, then from the
    repository."""
    from ..export.output import MARKER  # here, not at the top: the exporter's package loads torch

    out = Path(record.get("out") or "")
    for folder in (out,) if out.is_absolute() else (out, REPO_ROOT / out):
        try:
            if read_json(folder / MARKER).get("provenance") == record.get("provenance"):
                return folder
        except (OSError, ValueError, AttributeError):  # missing, unreadable or not an export summary
            continue
    return None


def draw_export_figure(results_dir: Path, category: str, record: dict, remake: str) -> str:
    """Draw the Q5 figure into <results>/figures/ from the export files when they are here, else keep one drawn
    earlier; one line saying which (with ``remake``, the command that makes the export, when there is no figure).
    The export folder is not committed, so on a fresh clone the committed figure is kept."""
    from ..export.output import MARKER

    path = results_dir / "figures" / export_figure_name(category)
    folder = find_export_dir(record)
    if folder is None:
        reason = f"export_{category}.json's export in {record.get('out')} is not on this machine"
        if (Path(record.get("out") or "") / MARKER).is_file():
            reason = f"{record.get('out')} holds another export than export_{category}.json describes"
    else:
        try:
            images, source = read_export(folder)
            reason = f"the export in {folder} holds no defect instances"
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:  # a damaged or foreign export
            images, reason = [], f"cannot read the export in {folder} ({exc.__class__.__name__}: {str(exc)[:80]})"
        if images:
            export_labels_figure(images, source, path)
            return f"Q5 figure drawn from {folder} ({source}): {path}"
    if path.is_file():
        return f"Q5 figure kept as drawn earlier ({reason}): {path}"
    return f"Q5 figure left out ({reason}); the report notes it. To draw it, run `{remake}`, then build it again"
