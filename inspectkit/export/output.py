"""The export folder: refuse unsafe targets, build in a staging folder that replaces ``--out`` only when complete,
and place images there by copy, hard or symbolic link, or resized."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ..errors import UserError
from ..imageio import open_image
from ..results import ensure_writable_dir

MARKER = "export_summary.json"  # written last into every export; --overwrite only replaces folders that have it
LINK_MODES = ("copy", "hard", "sym")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(out: str | os.PathLike, data_folder: Path, overwrite: bool) -> Path:
    """Validate ``--out`` before any work: not in the data, empty or new (or a previous export with --overwrite)."""
    target = Path(out).expanduser().resolve()
    data = data_folder.resolve()
    if _is_within(target, data):
        raise UserError(f"--out {out} is inside the dataset folder {data_folder}; never write into the data, "
                        "choose a folder outside it (e.g. exports/)")
    if _is_within(data, target):
        raise UserError(f"--out {out} contains the dataset folder {data_folder}; choose a folder outside the data")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out} exists and is not empty; pass --overwrite to replace it, "
                            "or choose a new folder")
        if not (target / MARKER).is_file():
            raise UserError(f"--out {out} holds files that export_labels.py did not write (no {MARKER}); "
                            "--overwrite only replaces earlier exports, so choose a new or empty folder")
    ensure_writable_dir(target.parent)
    return target


def check_outside_export(out: Path, results: Path, manifest: Path) -> None:
    """The export replaces ``out`` as a whole: the split manifest it reads and the results folder it writes must
    lie outside it, or the swap deletes the one (this run) or the other (the next --overwrite)."""
    if manifest.is_file() and manifest.resolve().is_relative_to(out):
        raise UserError(f"the split manifest {manifest} lies inside --out {out}, which the export replaces as a "
                        "whole; copy it outside first and pass it with --splits")
    if results.resolve().is_relative_to(out):
        raise UserError(f"--results {results} lies inside --out {out}, which the export replaces as a whole; "
                        "choose a --results folder outside it")


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to build in; on success it replaces ``target``, on failure it is removed."""
    stage = target.with_name(f".{target.name}.partial-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)  # check_out_dir allowed only an empty folder or an earlier export here
    stage.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def check_link_mode(link: str, data_folder: Path, out_parent: Path, resize: bool) -> None:
    """Fail early when images cannot be linked as asked (resized images are new files; hard links need one disk)."""
    if link not in LINK_MODES:
        raise UserError(f"unknown --link {link}; choose from {', '.join(LINK_MODES[1:])} (default: copy)")
    if link != "copy" and resize:
        raise UserError("--link keeps the original images, but --imgsz writes resized ones; drop one of them")
    if link == "hard" and os.stat(data_folder).st_dev != os.stat(out_parent).st_dev:
        raise UserError(f"--link hard needs --out on the same file system as {data_folder}; "
                        "use --link sym or copy (the default)")


class ImagePlacer:
    """Put each source image into the export once per format: the first time by ``mode`` (or resized), and
    after that as a hard link to that first file where the file system allows it, else as a copy."""

    def __init__(self, mode: str = "copy", imgsz: int | None = None) -> None:
        self.mode = mode
        self.imgsz = imgsz
        self._placed: dict[Path, Path] = {}

    def place(self, source: Path, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        first = self._placed.get(source)
        if self.mode == "sym":
            destination.symlink_to(source.resolve())
        elif first is not None:
            try:
                os.link(first, destination)
            except OSError:
                shutil.copyfile(first, destination)
        elif self.imgsz:
            image = open_image(source)  # 16-bit and float images scaled to 8 bits, as everywhere else
            if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):  # CMYK and the like: PNG cannot hold them
                image = image.convert("RGB")
            image.resize(resized_size(image.size, self.imgsz), Image.Resampling.BILINEAR).save(destination,
                                                                                                format="PNG")
        elif self.mode == "hard":
            os.link(source, destination)
        else:
            shutil.copyfile(source, destination)
        self._placed.setdefault(source, destination)


def resized_size(size: tuple[int, int], imgsz: int | None) -> tuple[int, int]:
    """(width, height) with the longer side scaled to ``imgsz`` (unchanged without it)."""
    if not imgsz:
        return size
    width, height = size
    scale = imgsz / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
