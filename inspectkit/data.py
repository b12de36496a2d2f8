"""Finding, scanning and validating a category in the MVTec AD folder layout.

Class names come from the folders: ``train/good``, ``test/<class>``, ``ground_truth/<defect>/<stem>_mask.<ext>``.
Recoverable problems (a corrupt file, a missing mask) are collected in ``Category.problems``; structural
ones (no ``train/good``, no test images) raise ``UserError``. Decoding each file to check it is ``filecheck``'s job.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from .cache import Size
from .errors import UserError
from .filecheck import CheckMemo, PrewarmStore, check_files, native_sizes, needs_decode
from .imageio import IMAGE_SUFFIXES, list_image_files

__all__ = ["IMAGE_SUFFIXES"]  # re-exported: scripts import the suffix list from here
DATA_ROOT_ENV = "MVTEC_ROOT"
DEFAULT_DATA_ROOT = Path("data")
DEFAULT_CATEGORY = "hazelnut"
GOOD = "good"
# The model input size to store each checked image at: a size, or a rule choosing it from the native
# (width, height) sizes of the training images, e.g. the anomaly detector's ``geometry.input_shape``.
Prewarm = Size | Callable[[list[tuple[int, int]]], Size]


def how_to_get_data(category: str | None) -> str:
    """The hint every 'no data' message ends with."""
    return (f"get it with `python stats.py --category {category or DEFAULT_CATEGORY} --download`, point "
            f"--data-root (or ${DATA_ROOT_ENV}) at your copy, or try the toolkit on synthetic data with --demo")


@dataclass(frozen=True)
class Sample:
    """One image of a category: where it is, which split and class folder it came from, and its mask."""

    path: Path
    split: str
    label: str
    mask_path: Path | None = None

    @property
    def is_defect(self) -> bool:
        return self.label != GOOD


@dataclass(frozen=True)
class ImageInfo:
    """Native properties of a decoded image."""

    width: int
    height: int
    mode: str


@dataclass
class Category:
    """A scanned (and usually validated) category: its usable samples and everything found wrong."""

    name: str
    root: Path
    samples: list[Sample]
    defect_classes: list[str]
    has_ground_truth: bool
    problems: list[dict] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    image_info: dict[Path, ImageInfo] = field(default_factory=dict)
    mask_fraction: dict[Path, float] = field(default_factory=dict)
    demo: bool = False

    @property
    def class_names(self) -> list[str]:
        """``good`` first, then the defect classes in sorted order: the label index order of every model."""
        return [GOOD, *self.defect_classes]

    def split_samples(self, split: str) -> list[Sample]:
        return [s for s in self.samples if s.split == split]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"train": {"good": n}, "test": {"good": n, "<defect>": n}}`` over usable samples."""
        train = Counter(s.label for s in self.split_samples("train"))
        test = Counter(s.label for s in self.split_samples("test"))
        return {"train": {GOOD: train[GOOD]}, "test": {c: test[c] for c in self.class_names}}

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def add_problem(self, path: Path, problem: str) -> None:
        self.problems.append({"file": self.relative(path), "problem": problem})


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """``--data-root`` if given, else ``$MVTEC_ROOT``, else ``./data``."""
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    return DEFAULT_DATA_ROOT


def _is_category_dir(path: Path) -> bool:
    return (path / "train").is_dir() or (path / "test").is_dir()


def list_categories(root: Path) -> list[str]:
    """Names of the category folders directly under ``root`` (folders holding ``train/`` or ``test/``)."""
    if _is_category_dir(root):
        return [root.name]
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_category_dir(p))


def check_category_name(name: str) -> str:
    """``name`` if it is a plain folder name; a UserError for anything that could lead outside the data root or
    --out (a separator, ``..``, an absolute or empty path)."""
    windows = PureWindowsPath(name)
    if (not name or name.strip() != name or name in (".", "..") or "/" in name or "\\" in name
            or PurePosixPath(name).is_absolute() or windows.drive or windows.is_absolute() or "\0" in name):
        raise UserError(f"--category {name!r} is not a category folder name (no '/', '\\', '..', drive or "
                        "absolute path); pass the folder's name, e.g. --category bottle, and point --data-root "
                        "at the folder that holds it")
    return name


def locate_category(root: Path, category: str | None) -> tuple[str, Path]:
    """Resolve ``(name, folder)`` for ``category`` under ``root``; ``root`` may be the category folder itself."""
    if category is not None:
        check_category_name(category)
    if not root.exists():
        raise UserError(f"data root '{root}' does not exist (looked at --data-root, then ${DATA_ROOT_ENV}, "
                        f"then ./{DEFAULT_DATA_ROOT}); {how_to_get_data(category)}")
    if not root.is_dir():
        raise UserError(f"data root {root} is not a folder; {how_to_get_data(category)}")
    if _is_category_dir(root):
        if category and category != root.name:
            raise UserError(f"--data-root {root} is the category folder '{root.name}', but --category is "
                            f"'{category}'; drop --category or point --data-root at the folder above")
        return root.name, root
    name = category or DEFAULT_CATEGORY
    if (root / name).is_dir():
        return name, root / name
    found = list_categories(root)
    where = f"{root / name}"
    if found:
        raise UserError(f"unknown category '{name}': no folder {where}; categories under {root}: {', '.join(found)}")
    raise UserError(f"no MVTec category '{name}' at {where}; {how_to_get_data(name)}")


def _list_images(folder: Path, skipped: list[str], root: Path, unreadable: list[tuple[Path, str]]) -> list[Path]:
    """The image files in ``folder``; other entries go to ``skipped``, and a folder that cannot be listed (permission
    denied) to ``unreadable`` with the reason, its images then being left out."""
    try:
        images, others = list_image_files(folder)
    except OSError as exc:
        unreadable.append((folder, exc.strerror or str(exc)))
        return []
    skipped.extend(path.relative_to(root).as_posix() for path in others)
    return images


def _class_dirs(folder: Path, unreadable: list[tuple[Path, str]]) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        unreadable.append((folder, exc.strerror or str(exc)))
        return []


def scan_category(name: str, folder: Path) -> Category:
    """List a category's images and masks from its folders, without decoding anything."""
    skipped: list[str] = []
    unreadable: list[tuple[Path, str]] = []
    train_good = folder / "train" / GOOD
    if not train_good.is_dir():
        raise UserError(f"category '{name}' has no train/good folder (expected {train_good}); "
                        "is --data-root pointing at an MVTec-layout dataset?")
    samples = [Sample(p, "train", GOOD) for p in _list_images(train_good, skipped, folder, unreadable)]
    if unreadable and not samples:
        raise UserError(f"cannot read {train_good} ({unreadable[0][1]}); make it readable (chmod) or copy the data "
                        "where you can read it")
    if not samples:
        raise UserError(f"{train_good} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    test_dir = folder / "test"
    test_classes = _class_dirs(test_dir, unreadable) if test_dir.is_dir() else []
    test_images = {c.name: _list_images(c, skipped, folder, unreadable) for c in test_classes}
    if not any(test_images.values()):
        raise UserError(f"category '{name}' has no test images (expected {test_dir}/<class>/*.png)")
    defect_classes = sorted(c for c, imgs in test_images.items() if c != GOOD and imgs)

    gt_dir = folder / "ground_truth"
    has_gt = gt_dir.is_dir()
    masks: dict[tuple[str, str], Path] = {}
    if has_gt:
        for cls_dir in _class_dirs(gt_dir, unreadable):
            for mask in _list_images(cls_dir, skipped, folder, unreadable):
                stem = mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem
                masks[(cls_dir.name, stem)] = mask

    category = Category(name, folder, samples, defect_classes, has_gt, skipped_files=skipped)
    for path, why in unreadable:
        category.add_problem(path, f"cannot read folder ({why}); the files in it are skipped")
    used_masks = set()
    for cls, images in test_images.items():
        for path in images:
            mask = masks.get((cls, path.stem)) if cls != GOOD else None
            if mask is not None:
                used_masks.add(mask)
            elif cls != GOOD and has_gt:
                category.add_problem(path, "missing mask (expected ground_truth/"
                                           f"{cls}/{path.stem}_mask.png); image kept, no pixel metrics for it")
            category.samples.append(Sample(path, "test", cls, mask))
    for mask in sorted(set(masks.values()) - used_masks):
        category.add_problem(mask, "orphan mask: no test image with this name")
    return category


def validate_category(category: Category, progress: bool = True, memo: bool = True,
                      prewarm: Prewarm | None = None) -> Category:
    """Decode every image and mask; drop undecodable images and bad masks, recording each problem.

    Fills ``image_info`` (native size and mode) and ``mask_fraction`` (share of defective pixels). What a
    decode found is remembered per file (path, size, mtime) in the cache, so a second run is quick. With
    ``prewarm`` (a size, or a rule choosing it from the training images' native sizes), each image and mask the
    check decodes is also resized and stored in the decode cache, so the model's first read decodes nothing.
    Files are decoded on all cores.
    """
    checks = CheckMemo(enabled=memo)
    warm = None
    if prewarm is not None and any(needs_decode(s.path, s.mask_path, checks) for s in category.samples):
        with contextlib.suppress(ValueError):  # no readable training header: the model decodes on its own
            warm = _prewarm_store(prewarm, category, checks)
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)  # Pillow decodes without holding the GIL
    try:
        records = list(tqdm(pool.map(lambda s: check_files(s.path, s.mask_path, checks, warm), category.samples),
                            total=len(category.samples), desc=f"checking {category.name}", unit="img",
                            disable=not progress, leave=False))
    finally:  # on Ctrl-C (or an error) stop at once, not after the files still queued
        pool.shutdown(cancel_futures=True)
    checks.save()
    kept: list[Sample] = []
    for sample, (record, mask_record) in zip(category.samples, records, strict=True):
        if "error" in record:
            category.add_problem(sample.path, f"{record['error']}; skipped")
            continue
        category.image_info[sample.path] = ImageInfo(record["width"], record["height"], record["mode"])
        if sample.mask_path is not None:
            sample = _check_mask(category, sample, (record["width"], record["height"]), mask_record)
        kept.append(sample)
    category.samples = kept

    modes = Counter(info.mode for info in category.image_info.values())
    if len(modes) > 1:
        main_mode = modes.most_common(1)[0][0]
        for path, info in category.image_info.items():
            if info.mode != main_mode:
                category.add_problem(path, f"image mode {info.mode} in a mostly {main_mode} category; "
                                           "models get it converted to RGB")
    category.defect_classes = sorted({s.label for s in category.samples if s.is_defect})
    return category


def _prewarm_store(request: Prewarm, category: Category, memo: CheckMemo) -> PrewarmStore:
    """The store for ``validate_category``'s ``prewarm``: a size, or the size a rule picks from the native sizes of
    the training images."""
    if callable(request):
        return PrewarmStore(request(native_sizes([s.path for s in category.split_samples("train")], memo)))
    return PrewarmStore(request)


def _check_mask(category: Category, sample: Sample, image_size: tuple[int, int], record: dict) -> Sample:
    mask_path = sample.mask_path
    if "error" in record:
        category.add_problem(mask_path, f"mask: {record['error']}; image kept without mask")
        return replace(sample, mask_path=None)
    if (record["width"], record["height"]) != image_size:
        category.add_problem(mask_path, f"mask is {record['width']}x{record['height']} but its image is "
                                        f"{image_size[0]}x{image_size[1]}; image kept without mask")
        return replace(sample, mask_path=None)
    if not record["binary"]:
        category.add_problem(mask_path, f"mask is not binary ({record['levels']} grey levels); "
                                        "pixels > 0 count as defect")
    category.mask_fraction[mask_path] = record["fraction"]
    return sample


def load_category(data_root: str | os.PathLike | None, category: str | None, *, validate: bool = True,
                  progress: bool = True, demo: bool = False, prewarm: Prewarm | None = None) -> Category:
    """Locate, scan and (by default) validate a category: the one entry point the scripts use. ``prewarm``: see
    ``validate_category``."""
    root = resolve_data_root(data_root)
    name, folder = locate_category(root, category)
    result = scan_category(name, folder)
    result.demo = demo
    if validate:
        validate_category(result, progress=progress, prewarm=prewarm)
        if not result.split_samples("train"):
            raise UserError(f"no decodable images in {folder / 'train' / GOOD}")
        if not result.split_samples("test"):
            raise UserError(f"no decodable test images in {folder / 'test'}")
    return result
