"""Scoring a folder of new images with a saved detector: the verdict at its good-only threshold, the score normalised
so that the threshold is 0.5, the largest defect region's bounding box in the file's own pixels, and (on request)
an overlay PNG per image. Images stream through in batches, so a folder of any length fits in memory.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from ..cache import resize_decoded
from ..errors import UserError
from ..imageio import BadImage, is_image_file, open_image
from ..results import atomic_write
from .patchcore import PatchCore

CSV_FIELDS = ("file", "width", "height", "score", "normalized_score", "verdict", "bbox_x0", "bbox_y0", "bbox_x1",
              "bbox_y1", "region_pixels")
DEFECT, GOOD = "defect", "good"


@dataclass
class Prediction:
    """One image's result. ``bbox`` is ``(x0, y0, x1, y1)`` in the file's pixels (x1, y1 exclusive), the box of
    the largest connected region of the map at or above the pixel threshold, for a ``defect`` verdict only."""

    file: str
    width: int
    height: int
    score: float
    normalized_score: float
    verdict: str
    bbox: tuple[int, int, int, int] | None
    region_pixels: int

    def row(self) -> dict:
        box = self.bbox or (None,) * 4
        return {"file": self.file, "width": self.width, "height": self.height, "score": round(self.score, 6),
                "normalized_score": round(self.normalized_score, 6), "verdict": self.verdict,
                **dict(zip(CSV_FIELDS[6:10], box, strict=True)), "region_pixels": self.region_pixels}


def find_images(folder: str | os.PathLike, flag: str = "--images") -> list[Path]:
    """Every image file under ``folder``, searched recursively (hidden files and folders skipped), sorted; a
    UserError naming ``flag`` when ``folder`` is not a folder or holds no image file."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{flag} {folder} {what}; pass a folder of images (searched recursively)")
    found = []
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(p for p in (Path(root) / f for f in files) if is_image_file(p))
    if not found:
        raise UserError(f"no image files (.png, .jpg, .bmp, .tif) anywhere under {flag} {folder}")
    return sorted(found)


def largest_region_box(anomaly_map: np.ndarray, threshold: float) -> tuple[tuple[int, int, int, int] | None, int]:
    """``((x0, y0, x1, y1), pixels)`` of the largest 8-connected region of ``anomaly_map >= threshold`` in map
    pixels (x1, y1 exclusive), or ``(None, 0)`` when no pixel reaches the threshold."""
    labelled, count = ndimage.label(anomaly_map >= threshold, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return None, 0
    sizes = np.bincount(labelled.ravel())[1:]
    biggest = int(np.argmax(sizes))
    rows, cols = ndimage.find_objects(labelled)[biggest]
    return (cols.start, rows.start, cols.stop, rows.stop), int(sizes[biggest])


def _scaled_box(box: tuple[int, int, int, int], map_shape: tuple[int, int], size: tuple[int, int]
                ) -> tuple[int, int, int, int]:
    """A box on the (H, W) map in the pixels of an image of ``size`` = (width, height)."""
    sx, sy = size[0] / map_shape[1], size[1] / map_shape[0]
    x0, y0, x1, y1 = box
    return (int(np.floor(x0 * sx)), int(np.floor(y0 * sy)), min(size[0], int(np.ceil(x1 * sx))),
            min(size[1], int(np.ceil(y1 * sy))))


def _decode(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 at the detector's (H, W) input shape, the way the fit saw its images, and the file's size."""
    image = open_image(path)
    return resize_decoded(image, shape, "rgb"), image.size


def overlay_png(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float, box: tuple | None,
                caption: str, path: Path) -> Path:
    """The image with the map coloured where it reaches the pixel threshold (yellow to red as it rises), the
    largest region's box, and a caption; written atomically as PNG. Plain PIL: one image costs milliseconds."""
    from matplotlib import colormaps

    top = max(float(anomaly_map.max()), pixel_threshold * (1 + 1e-6))
    strength = np.clip((anomaly_map - pixel_threshold) / (top - pixel_threshold), 0.0, 1.0)
    colour = colormaps["autumn_r"](strength)[..., :3] * 255.0
    alpha = np.where(anomaly_map >= pixel_threshold, 0.55, 0.0)[..., None]
    blended = (image * (1 - alpha) + colour * alpha).astype(np.uint8)
    picture = Image.fromarray(blended)
    draw = ImageDraw.Draw(picture)
    if box is not None:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(0, 255, 255), width=2)
    draw.rectangle([0, 0, picture.width, 14], fill=(0, 0, 0))
    draw.text((3, 1), caption, fill=(255, 255, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write(path, buffer.getvalue())


def _batches(files: list[Path], shape: tuple[int, int], batch_size: int, pool: ThreadPoolExecutor
             ) -> Iterator[tuple[list[tuple[Path, tuple[int, int]]], np.ndarray | None, list[tuple[Path, str]]]]:
    def load(path: Path):
        try:
            return path, *_decode(path, shape)
        except BadImage as exc:
            return path, None, exc.reason

    for start in range(0, len(files), batch_size):
        results = list(pool.map(load, files[start:start + batch_size]))
        good = [(p, size) for p, arr, size in results if arr is not None]
        bad = [(p, reason) for p, arr, reason in results if arr is None]
        arrays = [arr for _, arr, _ in results if arr is not None]
        yield good, (np.stack(arrays) if arrays else None), bad


def predict_folder(detector: PatchCore, folder: str | os.PathLike, *, maps_dir: Path | None = None,
                   batch_size: int | None = None, progress: bool = True) -> tuple[list[Prediction], list[dict], dict]:
    """Score every image under ``folder`` (recursively). Files that cannot be decoded are skipped and returned
    as ``{"file", "reason"}``, never fatal; a UserError when none could be used. With ``maps_dir``, one overlay
    PNG per image goes there, named after the image's path under ``folder``. Returns (predictions, skipped,
    timing)."""
    folder = Path(folder)
    files = find_images(folder)
    if detector.image_threshold is None:
        raise UserError("this detector was fitted without a validation share, so it has no threshold to give "
                        "verdicts; fit one with anomaly.py (--validation-share 0.1 is the default)")
    shape = tuple(detector.input_shape)
    batch_size = batch_size or detector.config.batch_size
    predictions, skipped = [], []
    start = time.perf_counter()
    feature_runtime = detector.features.prepare(shape)  # part of loading: the backbone's graph, cached or exported
    graph_s = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(files), desc="scoring images", unit="img", disable=not progress, leave=False) as bar:
        for good, arrays, bad in _batches(files, shape, batch_size, pool):
            skipped.extend({"file": p.relative_to(folder).as_posix(), "reason": r} for p, r in bad)
            if arrays is not None:
                scores, maps = detector.score(torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous())
                normalized = detector.normalized(scores)
                for i, (path, size) in enumerate(good):
                    predictions.append(_prediction(detector, folder, path, size, scores[i], normalized[i], maps[i],
                                                   arrays[i], maps_dir))
            bar.update(len(good) + len(bad))
    if not predictions:
        first = skipped[0]
        raise UserError(f"none of the {len(files)} images under --images {folder} could be used "
                        f"(first: {first['file']}: {first['reason']})")
    timing = {"score_s": round(time.perf_counter() - start, 3), "images": len(predictions),
              "per_image_ms": round(1000 * (time.perf_counter() - start) / len(predictions), 2),
              "graph_s": round(graph_s, 3), "feature_runtime": feature_runtime,
              "note": "score_s: decoding, scoring and writing every image, after the detector and its backbone's "
                      "graph (graph_s) were loaded"}
    return predictions, skipped, timing


def _prediction(detector: PatchCore, folder: Path, path: Path, size: tuple[int, int], score: float,
                normalized: float, anomaly_map: np.ndarray, image: np.ndarray, maps_dir: Path | None) -> Prediction:
    verdict = DEFECT if score >= detector.image_threshold else GOOD
    box, pixels = largest_region_box(anomaly_map, detector.pixel_threshold) if verdict == DEFECT else (None, 0)
    relative = path.relative_to(folder).as_posix()
    if maps_dir is not None:
        overlay_png(image, anomaly_map, detector.pixel_threshold, box,
                    f"{verdict} {normalized:.2f} (score {score:.3g})",
                    maps_dir / (relative.replace("/", "__").rsplit(".", 1)[0] + ".png"))
    scaled = _scaled_box(box, anomaly_map.shape, size) if box is not None else None
    area_scale = (size[0] * size[1]) / (anomaly_map.shape[0] * anomaly_map.shape[1])
    return Prediction(file=relative, width=size[0], height=size[1], score=float(score),
                      normalized_score=float(normalized), verdict=verdict, bbox=scaled,
                      region_pixels=round(pixels * area_scale))


def predictions_csv(predictions: list[Prediction]) -> str:
    """The predictions as CSV text, one row per image, columns ``CSV_FIELDS`` (an empty box when there is none)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(CSV_FIELDS))
    writer.writeheader()
    writer.writerows(p.row() for p in predictions)
    return text.getvalue()


def as_records(predictions: list[Prediction]) -> list[dict]:
    return [{**asdict(p), "bbox": list(p.bbox) if p.bbox else None} for p in predictions]
