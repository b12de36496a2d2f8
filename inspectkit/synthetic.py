"""A small procedural category in the exact MVTec AD layout, with exact masks: the demo data and the test data.

A textured disc (the "object") sits on a shaded background. Defects are drawn on the object and their
masks are exactly the pixels they changed: ``scratch`` (thin dark lines), ``hole`` (a dark round pit with a
bright rim) and ``stain`` (a translucent coloured blot).

Other kinds, for measuring a detector beyond one kind of image (``kind=``): ``texture`` (a woven pattern filling
the frame, defects anywhere), ``border`` (the object inside a thin frame whose brightness differs from image to
image, like the edge of a fixture). Images may be non-square (``width``/``height``), of mixed sizes (``sizes``),
or grey.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .cache import cache_root
from .results import atomic_write

DEFECT_TYPES = ("scratch", "hole", "stain")
DEMO_CATEGORY = "demo"
_DONE_MARKER = ".complete.json"


KINDS = ("object", "texture", "border", "crops")
FRAME_WIDTH = 1 / 40  # of the shorter side, for kind="border"


def _grid(height: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:height if width is None else width].astype(np.float32)
    return yy, xx


def _good_image(rng: np.random.Generator, height: int, width: int | None = None,
                kind: str = "object") -> tuple[np.ndarray, np.ndarray]:
    """A defect-free image (float RGB in [0, 1]) of ``kind`` and the mask of where defects may go."""
    width = height if width is None else width
    size = min(height, width)
    yy, xx = _grid(height, width)
    if kind == "crops":
        return _crop_image(rng, height, width)
    if kind == "texture":
        phase = rng.uniform(0, 2 * np.pi, 2)
        weave = np.sin(xx / size * 40 + phase[0]) * np.sin(yy / size * 40 + phase[1])
        image = np.array([0.5, 0.45, 0.4]) + 0.08 * weave[..., None] + rng.normal(0, 0.02, (height, width, 3))
        margin = int(size * 0.08)
        body = np.zeros((height, width), bool)
        body[margin:height - margin, margin:width - margin] = True
        return np.clip(image, 0, 1), body
    shade = 0.25 + 0.15 * (xx / width + yy / height) / 2
    image = np.repeat(shade[..., None], 3, axis=2) + rng.normal(0, 0.01, (height, width, 3))
    cy, cx = np.array([height, width]) / 2 + rng.uniform(-0.04, 0.04, 2) * size
    radius = size * rng.uniform(0.34, 0.38)
    dist = np.hypot(yy - cy, xx - cx)
    body = dist < radius
    angle = np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 2 * np.pi)
    texture = 0.05 * np.sin(dist / size * 60) + 0.04 * np.sin(angle * 12) + rng.normal(0, 0.015, (height, width))
    base = np.array([0.72, 0.55, 0.33]) + rng.normal(0, 0.015, 3)
    image[body] = base + texture[body, None]
    if kind == "border":  # a thin frame of its own brightness in every image, like the edge of a fixture
        band, value = max(2, round(size * FRAME_WIDTH)), rng.uniform(0, 1)
        for side in (np.s_[:band], np.s_[-band:]):
            image[side] = value
            image[:, side] = value
    return np.clip(image, 0, 1), body


CROP_EDGE_DEPTH = (0.04, 0.2)  # how far the dark region reaches in, as a share of the side it enters from


def _crop_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A woven texture whose frame is cut by a dark region, beyond a tilted edge, on one or two random sides; the
    defect region is the middle, away from wherever the edge may go."""
    size = min(height, width)
    yy, xx = _grid(height, width)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sin(xx / size * 40 + phase[0]) * np.sin(yy / size * 40 + phase[1])
    image = np.array([0.55, 0.5, 0.45]) + 0.08 * weave[..., None] + rng.normal(0, 0.02, (height, width, 3))
    dark = np.zeros((height, width), bool)
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        extent = height if side in (0, 1) else width  # top/bottom edges cut rows, left/right columns
        depth = rng.uniform(*CROP_EDGE_DEPTH) * extent
        tilt = rng.uniform(-0.15, 0.15) * extent  # the edge runs at a slant across the frame
        along = (xx / width if side in (0, 1) else yy / height) - 0.5
        inward = {0: yy, 1: height - 1 - yy, 2: xx, 3: width - 1 - xx}[int(side)]
        dark |= inward < depth + tilt * along
    image[dark] = 0.08 + rng.normal(0, 0.01, (int(dark.sum()), 3))
    margin_y, margin_x = int(height * 0.3), int(width * 0.3)
    body = np.zeros((height, width), bool)
    body[margin_y:height - margin_y, margin_x:width - margin_x] = True
    return np.clip(image, 0, 1), body & ~dark


def _inside_point(rng: np.random.Generator, body: np.ndarray, margin: float) -> tuple[float, float]:
    """A random point of the defect region at least about ``margin`` pixels from its edge."""
    height, width = body.shape
    ys, xs = np.nonzero(body)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt(body.sum() / np.pi) - margin
    r = radius * np.sqrt(rng.uniform(0, 1))
    t = rng.uniform(0, 2 * np.pi)
    return float(np.clip(cy + r * np.sin(t), 0, height - 1)), float(np.clip(cx + r * np.cos(t), 0, width - 1))


def _scratch(rng, image, body):
    size = min(image.shape[:2])
    yy, xx = _grid(*image.shape[:2])
    mask = np.zeros(image.shape[:2], bool)
    for _ in range(rng.integers(1, 3)):
        y0, x0 = _inside_point(rng, body, size * 0.12)
        t = rng.uniform(0, np.pi)
        length = size * rng.uniform(0.18, 0.3)
        y1, x1 = y0 + length * np.sin(t), x0 + length * np.cos(t)
        # distance from each pixel to the segment (y0,x0)-(y1,x1)
        dy, dx = y1 - y0, x1 - x0
        s = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0, 1)
        dist = np.hypot(yy - (y0 + s * dy), xx - (x0 + s * dx))
        mask |= dist < max(1.0, size / 120)
    mask &= body
    image[mask] = image[mask] * 0.25
    return mask


def _hole(rng, image, body):
    size = min(image.shape[:2])
    yy, xx = _grid(*image.shape[:2])
    cy, cx = _inside_point(rng, body, size * 0.1)
    radius = size * rng.uniform(0.04, 0.07)
    dist = np.hypot(yy - cy, xx - cx)
    mask = (dist < radius * 1.25) & body
    rim = mask & (dist >= radius)
    pit = mask & (dist < radius)
    image[rim] = np.clip(image[rim] * 1.5 + 0.1, 0, 1)
    image[pit] = 0.05 + 0.1 * (dist[pit, None] / radius)
    return mask


def _stain(rng, image, body):
    size = min(image.shape[:2])
    yy, xx = _grid(*image.shape[:2])
    cy, cx = _inside_point(rng, body, size * 0.12)
    field = np.zeros(image.shape[:2], np.float32)
    for _ in range(4):
        oy, ox = rng.normal(0, size * 0.03, 2)
        sy, sx = size * rng.uniform(0.03, 0.06, 2)
        field += np.exp(-(((yy - cy - oy) / sy) ** 2 + ((xx - cx - ox) / sx) ** 2))
    mask = (field > 0.5) & body
    colour = np.array([0.2, 0.45, 0.25]) + rng.normal(0, 0.03, 3)
    image[mask] = 0.45 * image[mask] + 0.55 * colour
    return mask


_DRAW = {"scratch": _scratch, "hole": _hole, "stain": _stain}


def _save(array: np.ndarray, path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8), "RGB").save(path)
    elif mode == "grey":
        Image.fromarray((np.clip(array.mean(axis=2), 0, 1) * 255).round().astype(np.uint8), "L").save(path)
    else:
        Image.fromarray(array.astype(np.uint8) * 255, "L").save(path)


def make_category(root: str | os.PathLike, name: str = DEMO_CATEGORY, *, image_size: int = 128,
                  n_train: int = 40, n_test_good: int = 10, n_per_defect: int = 10,
                  defects: tuple[str, ...] = DEFECT_TYPES, seed: int = 0, kind: str = "object",
                  width: int | None = None, height: int | None = None,
                  sizes: list[tuple[int, int]] | None = None, grey: bool = False,
                  defect_strength: float = 1.0) -> Path:
    """Write a synthetic category to ``root/name`` in MVTec layout and return its folder.

    ``defect_strength`` below 1 blends each defect with the image under it (0.3: a faint defect, 30 % of the
    change); the mask stays the whole defect.
    Images are ``image_size`` squares, or ``width`` x ``height``, or cycle through ``sizes`` ((width, height)
    pairs: a category of mixed sizes). The same arguments always give byte-identical files.
    """
    unknown = set(defects) - set(_DRAW)
    if unknown:
        raise ValueError(f"unknown defect types {sorted(unknown)}; choose from {list(_DRAW)}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}'; choose from {', '.join(KINDS)}")
    shapes = sizes or [(width or image_size, height or image_size)]
    folder = Path(root) / name
    mode = "grey" if grey else "RGB"
    rng = np.random.default_rng(seed)
    count = 0

    def good() -> tuple[np.ndarray, np.ndarray]:
        nonlocal count
        w, h = shapes[count % len(shapes)]
        count += 1
        return _good_image(rng, h, w, kind)

    for i in range(n_train):
        _save(good()[0], folder / "train" / "good" / f"{i:03d}.png", mode)
    for i in range(n_test_good):
        _save(good()[0], folder / "test" / "good" / f"{i:03d}.png", mode)
    for defect in defects:
        for i in range(n_per_defect):
            image, body = good()
            clean = image.copy()
            mask = _DRAW[defect](rng, image, body)
            image = clean + defect_strength * (image - clean)
            _save(image, folder / "test" / defect / f"{i:03d}.png", mode)
            _save(mask, folder / "ground_truth" / defect / f"{i:03d}_mask.png", mode="L")
    return folder


def demo_root(cache_dir: str | os.PathLike | None = None, **params) -> Path:
    """The data root of the demo category, generated into the cache on first use (about a second)."""
    params = {"image_size": 128, "n_train": 40, "n_test_good": 10, "n_per_defect": 10, "seed": 0, **params}
    tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "demo" / tag
    marker = root / DEMO_CATEGORY / _DONE_MARKER
    if not marker.exists():
        make_category(root, DEMO_CATEGORY, **params)
        atomic_write(marker, json.dumps(params))  # written last: a half-made demo category is made again
    return root
