"""Opening image files safely: one decoder for the whole toolkit, one image-folder listing and one folder reader.

``open_image`` refuses decompression bombs (more than ``MAX_IMAGE_PIXELS``), reports every failure as a
``BadImage`` with a one-line reason, and scales high-bit-depth images (16-bit, 32-bit int, float) to 8 bits.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import UserError

Decoded = TypeVar("Decoded")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

# 16384 x 16384 = 268 megapixels: well beyond any inspection camera (MVTec AD images are at most 1024 x 1024,
# a 150-megapixel sensor is 14204 x 10652), yet a file claiming more could ask for gigabytes when decoded.
MAX_IMAGE_SIDE = 16_384
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
# Pillow warns above its own limit and raises above twice it; make its limit ours, and check ours first.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_DECODE_ERRORS = (UnidentifiedImageError, SyntaxError, ValueError, EOFError, struct.error)


class BadImage(Exception):
    """A file that cannot be used as an image; ``reason`` is one line, e.g. for a list of skipped files.

    ``transient`` is True when the cause is the file system (permission denied, file gone), not the bytes: such a
    result must not be remembered, because the next run may read the file.
    """

    def __init__(self, path: Path, reason: str, transient: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.transient = transient


def too_large_reason(width: int, height: int) -> str:
    return (f"image is {width}x{height} pixels ({width * height:,}), above the limit of {MAX_IMAGE_PIXELS:,} pixels "
            f"({MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, inspectkit.imageio.MAX_IMAGE_PIXELS)")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully and return it in an 8-bit mode (L, RGB, RGBA, ...); ``info["source_mode"]`` keeps
    the file's own mode. Raises ``BadImage`` for an empty, unreadable, undecodable or too large file."""
    path = Path(path)
    # A truncated file is a bad image, never one filled with grey. weasyprint (the report) switches Pillow's global
    # LOAD_TRUNCATED_IMAGES on when imported, so in one process with it (run_all.py) the setting must be put back.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        if os.stat(path).st_size == 0:
            raise BadImage(path, "zero-byte image file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check below says it better
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise BadImage(path, too_large_reason(img.width, img.height))
                img.load()
                source_mode = img.mode
                image = to_8bit(img)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check (at twice our limit) came first, in open()
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels than that"
        raise BadImage(path, f"image has {size}, above the limit of {MAX_IMAGE_PIXELS:,} pixels "
                             f"({MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, inspectkit.imageio.MAX_IMAGE_PIXELS)") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system, not the bytes: permission denied, no such file, ...
            raise BadImage(path, f"cannot read ({exc.strerror or errno.errorcode.get(exc.errno, exc)})",
                           transient=True) from None
        raise BadImage(path, f"cannot decode image ({exc.__class__.__name__})") from None
    except _DECODE_ERRORS as exc:
        raise BadImage(path, f"cannot decode image ({exc.__class__.__name__})") from None
    image.info["source_mode"] = source_mode
    return image


def to_8bit(img: Image.Image) -> Image.Image:
    """The image in an 8-bit mode. 16-bit grey is scaled by its bit depth (65535 -> 255); 32-bit int by 65535
    when its values fit 16 bits, else by its range; float by 255 when its values lie in 0..1, else by its range.
    Pillow's own ``convert`` would clip these at 255 instead, turning most of an image white."""
    if img.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.float64)
        return _grey(values / 65535.0)
    if img.mode == "I":
        values = np.asarray(img).astype(np.float64)
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return _grey(values / (255.0 if values.max() <= 255 else 65535.0))
        return _grey(_by_range(values))
    if img.mode == "F":
        values = np.asarray(img).astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0 and values.max() <= 1:
            return _grey(values)
        return _grey(_by_range(values))
    return img


def _by_range(values: np.ndarray) -> np.ndarray:
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _grey(unit: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def is_image_file(path: Path) -> bool:
    """A visible file with an image suffix (the file itself is not opened)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def list_image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(images, others)`` directly in ``folder``, sorted; ``others`` are entries that are not image files.
    An unreadable folder raises the ``OSError`` (callers decide whether that skips the folder or ends the run)."""
    images, others = [], []
    for path in sorted(folder.iterdir()):
        (images if is_image_file(path) else others).append(path)
    return images, others


def find_image_files(folder: str | os.PathLike, flag: str = "--images", *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (``is_image_file``), sorted; with ``recursive``, in every folder below it too
    (hidden folders skipped, unreadable ones passed over). The one listing of a folder of images a user points at:
    a UserError naming ``flag`` when ``folder`` is missing, a file, unreadable or holds no image file."""
    folder = Path(folder)
    searched = " (searched recursively)" if recursive else ""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{flag} {folder} {what}; pass a folder of images{searched}")
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if recursive:
        found = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(p for p in (Path(root) / name for name in names) if is_image_file(p))
        if not found:
            raise UserError(f"no image files ({suffixes}) anywhere under {flag} {folder}")
        return sorted(found)
    try:
        found, _ = list_image_files(folder)
    except OSError as exc:
        raise UserError(f"cannot read {flag} {folder} ({exc.strerror or exc}); make it readable") from None
    if not found:
        raise UserError(f"no images ({suffixes}) in {flag} {folder}")
    return found


def read_image_folder(folder: str | os.PathLike, decode: Callable[[Path], Decoded], flag: str = "--images",
                      ) -> tuple[list[Path], list[Decoded], list[tuple[Path, str]]]:
    """Decode every image file directly in ``folder`` (``find_image_files``) with ``decode`` (e.g.
    ``DecodeCache.image``). A file that cannot be used is skipped and returned with its reason in ``skipped``; the
    run goes on. A UserError naming ``flag`` when the folder has no image files (``find_image_files``) or none of
    them decodes. Returns ``(files, decoded, skipped)``."""
    candidates = find_image_files(folder, flag)
    files, decoded, skipped = [], [], []
    for path in candidates:
        try:
            decoded.append(decode(path))
        except BadImage as exc:
            skipped.append((path, exc.reason))
            continue
        files.append(path)
    if not files:
        raise UserError(f"none of the {len(candidates)} images in {flag} {folder} could be used "
                        f"(first: {skipped[0][0].name}: {skipped[0][1]})")
    return files, decoded, skipped
