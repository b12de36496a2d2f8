"""Checking one image (and its mask) by decoding it: its native size and mode, or why it cannot be used; the mask's
defect share and grey levels. What a decode found is remembered per file (path, size, mtime) in the cache folder (the
check memo), and the decoded pixels can be stored at the model's input size in the decode cache (prewarm)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .cache import DecodeCache, Size, cache_root
from .imageio import BadImage, open_image
from .results import UnwritablePath, atomic_write

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"width": int, "height": int, "mode": str,
                                                    "fraction": (int, float), "binary": bool, "levels": int}
IMAGE_FIELDS = ("width", "height", "mode")
MASK_FIELDS = ("width", "height", "fraction", "binary", "levels")


class CheckMemo:
    """What decoding a file told us last time, keyed by path, size and mtime, so a re-run skips the decode.

    Stored as one JSON file in the cache folder. A store of another version or shape (``null``, a number, garbage)
    is discarded and rebuilt; entries of the wrong shape are ignored; a failure of the file system (permission
    denied) is never stored, so the next run tries the file again.
    """

    VERSION = 2  # bump when what a check records changes

    def __init__(self, enabled: bool = True) -> None:
        self.path = cache_root() / "checked_files.json"
        self.enabled = enabled
        self.entries: dict[str, dict] = {}
        self.dirty = False
        if enabled:
            self.entries = self._read(self.path)

    @classmethod
    def _read(cls, path: Path) -> dict[str, dict]:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("version") != cls.VERSION:
            return {}
        entries = stored.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}

    @staticmethod
    def key(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def get(self, path: Path, fields: tuple[str, ...]) -> dict | None:
        """The stored record if it has an error or all of ``fields`` with the right types, else None."""
        if not self.enabled:
            return None
        record = self.entries.get(self.key(path))
        if record is None:
            return None
        if isinstance(record.get("error"), str):
            return record
        return record if all(isinstance(record.get(f), _FIELD_TYPES[f]) for f in fields) else None

    def put(self, path: Path, record: dict) -> dict:
        if self.enabled:
            self.entries[self.key(path)] = record
            self.dirty = True
        return record

    def save(self) -> None:
        if not (self.enabled and self.dirty):
            return
        with contextlib.suppress(UnwritablePath):  # the memo only saves time: never fail the run
            atomic_write(self.path, json.dumps({"version": self.VERSION, "entries": self.entries}))


class PrewarmStore:
    """Where the check stores what it decoded, resized to the model's input size: the decode cache's disk entries."""

    def __init__(self, size: Size) -> None:
        self.cache = DecodeCache(memory=False)
        self.size = size

    def store(self, path: Path, decoded: Image.Image, kind: str) -> None:
        with contextlib.suppress(OSError):  # the stored copy only saves time: never fail the check
            self.cache.prewarm(path, decoded, self.size, kind)


def native_sizes(paths: list[Path], memo: CheckMemo) -> list[tuple[int, int]]:
    """Native (width, height) of the images at ``paths``, from the memo or the file header (nothing is decoded);
    unreadable files are left out."""
    sizes = []
    for path in paths:
        with contextlib.suppress(OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            record = memo.get(path, IMAGE_FIELDS)
            if record is None:
                with Image.open(path) as img:
                    sizes.append(img.size)
            elif "error" not in record:
                sizes.append((record["width"], record["height"]))
    return sizes


def _check_image(path: Path, memo: CheckMemo, prewarm: PrewarmStore | None) -> dict:
    if (record := memo.get(path, IMAGE_FIELDS)) is not None:
        return record
    try:
        img = open_image(path)
    except BadImage as exc:
        return {"error": exc.reason} if exc.transient else memo.put(path, {"error": exc.reason})
    if prewarm is not None:
        prewarm.store(path, img, "rgb")
    return memo.put(path, {"width": img.width, "height": img.height, "mode": img.info["source_mode"]})


def _check_mask_file(path: Path, memo: CheckMemo, prewarm: PrewarmStore | None) -> dict:
    if (record := memo.get(path, MASK_FIELDS)) is not None:
        return record
    try:
        grey = open_image(path).convert("L")
    except BadImage as exc:
        return {"error": exc.reason} if exc.transient else memo.put(path, {"error": exc.reason})
    if prewarm is not None:
        prewarm.store(path, grey, "mask")
    mask = np.asarray(grey)
    values = set(np.unique(mask).tolist())
    return memo.put(path, {"width": mask.shape[1], "height": mask.shape[0], "fraction": float((mask > 0).mean()),
                           "binary": values <= {0, 255} or values <= {0, 1}, "levels": len(values)})


def _unreadable(exc: OSError) -> dict:
    """The record of a file whose memo key could not be made: it vanished, or its folder is not searchable."""
    return {"error": f"cannot read ({exc.strerror or exc})"}


def check_files(image: Path, mask: Path | None, memo: CheckMemo,
                prewarm: PrewarmStore | None) -> tuple[dict, dict | None]:
    """The records of an image and (when the image is usable) its mask: ``{"error": why}``, or the fields of
    ``IMAGE_FIELDS`` / ``MASK_FIELDS``. Safe to run in worker threads (Pillow decodes without the GIL)."""
    try:
        image_record = _check_image(image, memo, prewarm)
    except OSError as exc:
        image_record = _unreadable(exc)
    if mask is None or "error" in image_record:
        return image_record, None
    try:
        return image_record, _check_mask_file(mask, memo, prewarm)
    except OSError as exc:
        return image_record, _unreadable(exc)


def needs_decode(image: Path, mask: Path | None, memo: CheckMemo) -> bool:
    """Whether ``check_files`` would decode the image or its mask (the memo does not know them yet)."""
    try:
        return memo.get(image, IMAGE_FIELDS) is None or (mask is not None and memo.get(mask, MASK_FIELDS) is None)
    except OSError:
        return False  # the check reports it without decoding
