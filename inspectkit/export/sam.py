"""A SAM fine-tuning set: ``<part>.jsonl`` with one line per instance (image, mask PNG or RLE, box prompt,
positive points inside the mask and negative points near it), images under ``images/<part>/``.

Boxes are ``[x0, y0, x1, y1]`` on pixel edges; points are ``[x, y]`` at pixel centres (column + 0.5, row + 0.5).
Paths are relative to the folder holding the JSONL files. Point sampling and box jitter are seeded per instance.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..results import json_text
from ..splits import PARTS
from .build import ExportImage, ExportOptions
from .instances import Instance
from .output import ImagePlacer

MASK_KINDS = ("png", "rle")
NEGATIVE_MARGIN = 0.25  # negatives come from the box grown by this share of its size, outside the mask


def instance_rng(seed: int, file: str, instance: int) -> np.random.Generator:
    """A generator that depends on the seed, the image and the instance only (not on processing order)."""
    # surrogateescape: a name that is not UTF-8 hashes as its bytes on disk (UTF-8 names as before)
    return np.random.default_rng([seed, zlib.crc32(file.encode("utf-8", "surrogateescape")), instance])


def jitter_box(box: tuple[int, int, int, int], amount: float, width: int, height: int,
               rng: np.random.Generator) -> list[float]:
    """Move each side of an ``x0, y0, x1, y1`` box by up to ``amount`` times the box size, inside the image."""
    x0, y0, x1, y1 = box
    if amount <= 0:
        return [float(v) for v in box]
    dx, dy = amount * (x1 - x0), amount * (y1 - y0)
    nx0, nx1 = np.clip([x0 + rng.uniform(-dx, dx), x1 + rng.uniform(-dx, dx)], 0, width)
    ny0, ny1 = np.clip([y0 + rng.uniform(-dy, dy), y1 + rng.uniform(-dy, dy)], 0, height)
    if nx1 - nx0 < 1 or ny1 - ny0 < 1:
        return [float(v) for v in box]
    return [round(float(v), 2) for v in (nx0, ny0, nx1, ny1)]


def _pick(rng: np.random.Generator, candidates: np.ndarray, count: int) -> list[list[float]]:
    rows, cols = np.nonzero(candidates)
    if count <= 0 or rows.size == 0:
        return []
    chosen = rng.choice(rows.size, size=min(count, rows.size), replace=False)
    return [[float(cols[i]) + 0.5, float(rows[i]) + 0.5] for i in sorted(chosen)]


def sample_points(mask: np.ndarray, box: tuple[int, int, int, int], positive: int, negative: int,
                  rng: np.random.Generator) -> tuple[list[list[float]], list[int]]:
    """Positive points inside the mask (away from its edge where it is thick enough) and negatives near it."""
    interior = ndimage.binary_erosion(mask, iterations=2)
    inside = interior if interior.sum() >= positive else mask
    x0, y0, x1, y1 = box
    mx, my = max(4, round(NEGATIVE_MARGIN * (x1 - x0))), max(4, round(NEGATIVE_MARGIN * (y1 - y0)))
    near = np.zeros_like(mask)
    near[max(0, y0 - my):y1 + my, max(0, x0 - mx):x1 + mx] = True
    outside = near & ~mask
    if not outside.any():
        outside = ~mask
    positives, negatives = _pick(rng, inside, positive), _pick(rng, outside, negative)
    return positives + negatives, [1] * len(positives) + [0] * len(negatives)


def sam_record(image: ExportImage, k: int, inst: Instance, mask: np.ndarray, options: ExportOptions,
               mask_file: str | None) -> dict:
    """One JSONL line: the instance's prompts and where its image and mask are."""
    rng = instance_rng(options.seed, image.file, k)
    points, labels = sample_points(mask, inst.box_xyxy, options.sam_positive, options.sam_negative, rng)
    record = {"image": f"images/{image.part}/{image.name}", "source_file": image.file, "width": image.width,
              "height": image.height, "label": inst.label, "instance": k}
    record.update({"mask": mask_file} if mask_file else {"rle": inst.rle})
    record.update({"box": list(inst.box_xyxy),
                   "box_prompt": jitter_box(inst.box_xyxy, options.box_jitter, image.width, image.height, rng),
                   "points": points, "point_labels": labels})
    return record


def write_sam(root: Path, images: Iterable[ExportImage], placer: ImagePlacer, options: ExportOptions) -> dict:
    """Write ``<part>.jsonl`` files (instances only; background images are not part of a SAM set)."""
    lines: dict[str, list[str]] = {}
    per_part: Counter[str] = Counter()
    for image in images:
        if not image.instances:
            continue
        placer.place(image.source, root / "images" / image.part / image.name)
        for k, inst in enumerate(image.instances):
            mask = inst.mask()
            mask_file = None
            if options.sam_mask == "png":
                mask_file = f"masks/{image.part}/{image.stem}__{k}.png"
                (root / mask_file).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255, "L").save(root / mask_file)
            record = sam_record(image, k, inst, mask, options, mask_file)
            lines.setdefault(image.part, []).append(json_text(record, indent=None))
            per_part[image.part] += 1
    for part, rows in lines.items():
        (root / f"{part}.jsonl").write_text("".join(f"{row}\n" for row in rows))
    order = sorted(lines, key=PARTS.index)
    return {"files": {part: f"{part}.jsonl" for part in order}, "mask": options.sam_mask,
            "instances": {part: per_part[part] for part in order}}
