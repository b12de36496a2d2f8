"""Decode each image once: resized uint8 arrays cached in memory and on disk, keyed by file content and size."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CACHE_ENV = "INSPECTKIT_CACHE"


def cache_root() -> Path:
    """``$INSPECTKIT_CACHE``, else ``$XDG_CACHE_HOME/inspectkit``, else ``~/.cache/inspectkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inspectkit"


_HASHES: dict[tuple[str, int, int], str] = {}
# np.load parses the .npy header with ast.literal_eval, which CPython 3.11 does not make safe across threads
# (python/cpython#106905: "AST constructor recursion depth mismatch"); readers may run in a thread pool.
_NPY_LOAD_LOCK = threading.Lock()


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) for this process."""
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


class DecodeCache:
    """Resized images (RGB, uint8, HxWx3) and masks (bool, HxW), decoded at most once per content and size.

    The disk copy lives under ``<cache_root>/decoded``; pass ``disk=False`` to keep everything in memory.
    """

    def __init__(self, folder: str | os.PathLike | None = None, disk: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else cache_root() / "decoded"
        self.disk = disk
        self._memory: dict[tuple[str, int, str], np.ndarray] = {}
        self.decoded = 0  # how many files were actually decoded (not served from a cache)

    def _load(self, path: Path, size: int, kind: str) -> np.ndarray:
        key = (content_hash(path), size, kind)
        if key in self._memory:
            return self._memory[key]
        file = self.folder / f"{key[0][:32]}_{size}_{kind}.npy"
        array = None
        if self.disk and file.exists():
            try:
                with _NPY_LOAD_LOCK:
                    array = np.load(file)
            except (OSError, ValueError):
                array = None  # a damaged cache entry is rebuilt below
        if array is None:
            array = _decode_resized(path, size, kind)
            self.decoded += 1
            if self.disk:
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, array)
                os.replace(tmp, file)
        self._memory[key] = array
        return array

    def image(self, path: str | os.PathLike, size: int) -> np.ndarray:
        """RGB uint8 array of shape (size, size, 3)."""
        return self._load(Path(path), size, "rgb")

    def mask(self, path: str | os.PathLike | None, size: int) -> np.ndarray:
        """Boolean mask of shape (size, size); all False when ``path`` is None (a good image)."""
        if path is None:
            return np.zeros((size, size), dtype=bool)
        return self._load(Path(path), size, "mask")

    def image_tensor(self, path: str | os.PathLike, size: int) -> torch.Tensor:
        """uint8 tensor of shape (3, size, size), sharing memory with the cached array."""
        return torch.from_numpy(self.image(path, size)).permute(2, 0, 1)


def _decode_resized(path: Path, size: int, kind: str) -> np.ndarray:
    with Image.open(path) as img:
        if kind == "rgb":
            return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)).copy()
        mask = img.convert("L").resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(mask) > 0
