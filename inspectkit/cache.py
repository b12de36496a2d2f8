"""Decode each image once: resized uint8 arrays cached in memory and on disk, keyed by file content and size.

Decoding goes through ``imageio.open_image``; a damaged disk entry is discarded and rebuilt, never an error. A
caller that decodes a file anyway (the data check) hands the image over with ``prewarm``, so nothing decodes it twice.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .imageio import open_image
from .results import UnwritablePath, atomic_write, sha256_file

CACHE_ENV = "INSPECTKIT_CACHE"
# Part of every disk entry's name: bump it when decoding changes, so entries decoded the old way are not served.
# 2: imageio.open_image scales 16-bit and float images to 8 bits (before, Pillow clipped them at 255).
DECODER_VERSION = 2


def cache_root() -> Path:
    """``$INSPECTKIT_CACHE``, else ``$XDG_CACHE_HOME/inspectkit``, else ``~/.cache/inspectkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inspectkit"


Size = int | tuple[int, int]  # an int is a square side; a tuple is (height, width)

_HASHES: dict[tuple[str, int, int], str] = {}
# np.load parses the .npy header with ast.literal_eval, which CPython 3.11 does not make safe across threads
# (python/cpython#106905: "AST constructor recursion depth mismatch"); readers may run in a thread pool.
_NPY_LOAD_LOCK = threading.Lock()


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) for this process."""
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


class DecodeCache:
    """Resized images (RGB, uint8, HxWx3) and masks (bool, HxW), decoded at most once per content and size.

    The disk copy lives under ``<cache_root>/decoded``; pass ``disk=False`` to keep everything in memory, or
    ``memory=False`` to keep nothing in memory (a streamed pass that reads each image once).
    """

    def __init__(self, folder: str | os.PathLike | None = None, disk: bool = True, memory: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else cache_root() / "decoded"
        self.disk = disk
        self.memory = memory
        self._memory: dict[tuple[str, tuple[int, int], str], np.ndarray] = {}
        self.decoded = 0  # how many files were actually decoded (not served from a cache)

    def _entry(self, path: Path, size: Size, kind: str) -> tuple[tuple[str, tuple[int, int], str], Path]:
        """The memory key and the disk file of ``path`` at ``size``."""
        height, width = _height_width(size)
        key = (content_hash(path), (height, width), kind)
        label = str(height) if height == width else f"{height}x{width}"
        return key, self.folder / f"{key[0][:32]}_{label}_{kind}_d{DECODER_VERSION}.npy"

    def _load(self, path: Path, size: Size, kind: str) -> np.ndarray:
        key, file = self._entry(path, size, kind)
        if key in self._memory:
            return self._memory[key]
        array = self._read_entry(file, key[1], kind) if self.disk else None
        if array is None:
            array = _decode_resized(path, key[1], kind)
            self.decoded += 1
            self._keep(key, file, array)
        elif self.memory:
            self._memory[key] = array
        return array

    def _keep(self, key: tuple[str, tuple[int, int], str], file: Path, array: np.ndarray) -> None:
        if self.disk:
            with contextlib.suppress(UnwritablePath):  # the disk copy only saves time: never fail the run
                atomic_write(file, lambda fh: np.save(fh, array))
        if self.memory:
            self._memory[key] = array

    def prewarm(self, path: str | os.PathLike, decoded: Image.Image, size: Size, kind: str = "rgb") -> None:
        """Store ``decoded``, what ``open_image(path)`` gave a caller that needed the full image anyway (the data
        check), resized to ``size`` as the entry a later ``image`` (``kind="rgb"``) or ``mask`` (``kind="mask"``)
        call reads, so that call decodes nothing. An entry already stored is left as it is."""
        key, file = self._entry(Path(path), size, kind)
        if key in self._memory or (self.disk and file.is_file()):
            return
        self._keep(key, file, resize_decoded(decoded, key[1], kind))

    @staticmethod
    def _read_entry(file: Path, size: tuple[int, int], kind: str) -> np.ndarray | None:
        """The stored array, or None when it is missing or damaged (unreadable, another shape or type): the
        caller then decodes the image again and replaces the entry."""
        try:
            with _NPY_LOAD_LOCK:
                array = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        shape, dtype = ((*size, 3), np.uint8) if kind == "rgb" else (size, np.bool_)
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
            return None
        return array

    def image(self, path: str | os.PathLike, size: Size) -> np.ndarray:
        """RGB uint8 array of shape (size, size, 3), or (height, width, 3) when ``size`` is (height, width)."""
        return self._load(Path(path), size, "rgb")

    def mask(self, path: str | os.PathLike | None, size: Size) -> np.ndarray:
        """Boolean mask of shape (size, size) or (height, width); all False when ``path`` is None (a good image)."""
        if path is None:
            return np.zeros(_height_width(size), dtype=bool)
        return self._load(Path(path), size, "mask")

    def image_tensor(self, path: str | os.PathLike, size: Size) -> torch.Tensor:
        """uint8 tensor of shape (3, height, width), sharing memory with the cached array."""
        return torch.from_numpy(self.image(path, size)).permute(2, 0, 1)


def _height_width(size: Size) -> tuple[int, int]:
    if isinstance(size, tuple):
        height, width = size
        return int(height), int(width)
    return int(size), int(size)


def _decode_resized(path: Path, size: tuple[int, int], kind: str) -> np.ndarray:
    return resize_decoded(open_image(path), size, kind)  # a BadImage reaches the caller, which lists the file


def resize_decoded(img: Image.Image, size: tuple[int, int], kind: str) -> np.ndarray:
    """A decoded image at ``(height, width)``, as the cache stores it: RGB uint8 (``kind="rgb"``) or bool
    (``kind="mask"``)."""
    height, width = size
    if kind == "rgb":
        return np.asarray(img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)).copy()
    mask = img.convert("L").resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(mask) > 0
