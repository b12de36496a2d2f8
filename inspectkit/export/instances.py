"""Ground-truth mask to instances: connected components with a box, outer polygons, COCO RLE, area and polygon IoU.

Boxes and polygons use pixel edges: the pixel at column c spans [c, c+1), as in COCO, whose rasteriser
(pycocotools) fills a pixel when its centre (c + 0.5) lies inside the polygon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage
from skimage import measure

# 8-connectivity for components, matched by "high" connectivity in marching squares, so one region gives one contour
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Instance:
    """One connected defect region of a mask."""

    label: str
    bbox: tuple[int, int, int, int]  # x, y, width, height in pixels
    area: int  # pixels
    polygons: list[list[float]]  # each flat [x1, y1, x2, y2, ...], largest first; outer boundaries only
    rle: dict  # COCO RLE {"size": [height, width], "counts": str}
    polygon_iou: float  # IoU between the rasterised polygons and the region itself
    has_holes: bool

    @property
    def box_xyxy(self) -> tuple[int, int, int, int]:
        x, y, w, h = self.bbox
        return x, y, x + w, y + h

    def mask(self) -> np.ndarray:
        """The region as a boolean image-sized array (decoded from the RLE)."""
        return mask_utils.decode(encodable_rle(self.rle)).astype(bool)


def encodable_rle(rle: dict) -> dict:
    """A JSON-style RLE (``counts`` as str) in the byte form pycocotools' functions take."""
    return {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}


def encode_rle(region: np.ndarray) -> dict:
    """COCO RLE of a boolean mask, with ``counts`` as str so that it can go into JSON."""
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygon_area(flat: list[float]) -> float:
    """Area of a simple polygon given as flat [x1, y1, ...] (shoelace formula)."""
    xs, ys = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def _outer_polygons(filled: np.ndarray, offset: tuple[int, int], shape: tuple[int, int],
                    tolerance: float) -> list[list[float]]:
    """Outer contours of a hole-free crop, as flat polygons in image coordinates (pixel-edge convention).

    Marching squares at level 0.5 runs along pixel edges and cuts corners through edge midpoints, so every
    region pixel's centre lies inside the polygon and every other centre outside it.
    """
    padded = np.pad(filled, 1).astype(np.float32)
    height, width = shape
    polygons = []
    for contour in measure.find_contours(padded, 0.5, fully_connected="high"):
        simplified = measure.approximate_polygon(contour, tolerance) if tolerance > 0 else contour
        for candidate in (simplified, contour):
            points = candidate[:-1] if len(candidate) > 1 and np.allclose(candidate[0], candidate[-1]) else candidate
            # index coordinates of the padded crop -> image pixel edges: -1 for the padding, +0.5 to edges
            rows = np.clip(points[:, 0] - 0.5 + offset[0], 0, height)
            cols = np.clip(points[:, 1] - 0.5 + offset[1], 0, width)
            flat = np.column_stack([cols, rows]).ravel().round(2).tolist()
            if len(points) >= 3 and polygon_area(flat) > 0:
                polygons.append(flat)
                break  # simplification kept a valid polygon, or the full contour is used instead
    return sorted(polygons, key=polygon_area, reverse=True)


def polygons_iou(polygons: list[list[float]], rle: dict) -> float:
    """IoU between polygons rasterised by pycocotools and the region an RLE describes."""
    height, width = rle["size"]
    if not polygons:
        return 0.0
    rasterised = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return float(mask_utils.iou([rasterised], [encodable_rle(rle)], [0])[0][0])


def mask_instances(mask: np.ndarray, label: str, *, min_area: int = 1,
                   polygon_tolerance: float = 0.0) -> tuple[list[Instance], int]:
    """Split a boolean mask into 8-connected regions of at least ``min_area`` pixels.

    Returns the instances in scan order and how many smaller regions were dropped. Polygons trace each
    region's outer boundary (holes are filled; the RLE keeps them), simplified by ``polygon_tolerance`` pixels.
    """
    components, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    instances: list[Instance] = []
    dropped = 0
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        region_crop = components[box] == index
        area = int(region_crop.sum())
        if area < min_area:
            dropped += 1
            continue
        region = np.zeros(mask.shape, dtype=bool)
        region[box] = region_crop
        filled = ndimage.binary_fill_holes(region_crop)
        polygons = _outer_polygons(filled, (box[0].start, box[1].start), mask.shape, polygon_tolerance)
        rle = encode_rle(region)
        instances.append(Instance(
            label=label,
            bbox=(box[1].start, box[0].start, box[1].stop - box[1].start, box[0].stop - box[0].start),
            area=area,
            polygons=polygons,
            rle=rle,
            polygon_iou=polygons_iou(polygons, rle),
            has_holes=bool(filled.sum() > area),
        ))
    return instances, dropped
