"""The export's inputs: its options, and each image of the category with its split part and mask instances."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data import Category
from ..errors import UserError
from ..imageio import open_image
from ..names import flat_name
from .instances import Instance, mask_instances
from .output import resized_size

FORMATS = ("yolo", "yolo-seg", "coco", "sam")


@dataclass
class ExportOptions:
    """Everything that shapes an export; copied into the summary JSON as ``settings``."""

    formats: tuple[str, ...] = FORMATS
    min_area: int = 16
    polygon_tolerance: float = 0.25
    imgsz: int | None = None
    link: str = "copy"
    background: bool = True
    coco_segmentation: str = "polygon"
    sam_mask: str = "png"
    sam_positive: int = 3
    sam_negative: int = 1
    box_jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Every number checked once, here; a UserError naming the flag that sets it (export_labels.py's)."""
        if self.min_area < 1:
            raise UserError(f"--min-area must be at least 1 pixel (got {self.min_area})")
        if self.polygon_tolerance < 0:
            raise UserError(f"--polygon-tolerance must be 0 or more (got {self.polygon_tolerance})")
        if self.imgsz is not None and self.imgsz < 32:
            raise UserError(f"--imgsz must be at least 32 (got {self.imgsz})")
        if self.sam_positive < 1 or self.sam_negative < 0:
            raise UserError("--sam-positive must be at least 1 and --sam-negative at least 0")
        if not 0 <= self.box_jitter < 1:
            raise UserError(f"--box-jitter must be in [0, 1) (got {self.box_jitter})")


@dataclass
class ExportImage:
    """One image as exported: its source, part, exported name and size, and its instances (none for good ones)."""

    file: str  # relative to the category folder, e.g. test/broken_large/000.png
    source: Path
    label: str
    part: str
    name: str  # file name in the export, unique across the category
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return Path(self.name).stem


@dataclass
class Collected:
    images: list[ExportImage]
    skipped: list[dict]  # {"file", "reason"}: defect images without usable instances, images outside the split
    dropped_regions: int  # connected regions smaller than --min-area
    background_left_out: int


def export_name(file: str, resized: bool) -> str:
    """A flat file name whose stem is unique by construction (``names.flat_name``): ``test/broken_large/000.png``
    -> ``test__broken_large__000.png``; ``000.jpg`` -> ``000%2Ejpg.jpg``, or ``000%2Ejpg.png`` when resized (resized
    images are written as PNG). Shared with the overlays of ``anomaly.py --save-maps``."""
    return flat_name(file, ".png" if resized else None)


def check_unique_names(images: list[ExportImage]) -> None:
    """The export's promise that no image (or its label file) replaces another: every exported stem is used once."""
    seen: dict[str, str] = {}
    for image in images:
        if image.stem in seen:
            raise ValueError(f"export names collide: {seen[image.stem]} and {image.file} -> {image.stem}")
        seen[image.stem] = image.file



def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as booleans (pixels > 0), nearest-resized to ``size`` (width, height) if needed."""
    mask = open_image(path).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return np.asarray(mask) > 0


def collect(category: Category, part_of: dict[str, str], options: ExportOptions,
            progress: bool = True) -> Collected:
    """Instances of every defect image and the background images, each with its split part."""
    if not category.has_ground_truth:
        raise UserError(f"category '{category.name}' has no ground_truth folder, so there are no masks to "
                        f"export (expected {category.root / 'ground_truth'}/<defect>/<name>_mask.png)")
    images, skipped = [], []
    dropped = background_left_out = 0
    for sample in tqdm(category.samples, desc=f"instances from {category.name} masks", unit="img",
                       disable=not progress, leave=False):
        file = category.relative(sample.path)
        if file not in part_of:
            skipped.append({"file": file, "reason": "not in the split manifest"})
            continue
        if not sample.is_defect and not options.background:
            background_left_out += 1
            continue
        info = category.image_info[sample.path]
        width, height = resized_size((info.width, info.height), options.imgsz)
        image = ExportImage(file, sample.path, sample.label, part_of[file], export_name(file, bool(options.imgsz)),
                            width, height)
        if sample.is_defect:
            if sample.mask_path is None:
                skipped.append({"file": file, "reason": "defect image without a usable mask"})
                continue
            mask = read_mask(sample.mask_path, (width, height))
            if not mask.any():
                skipped.append({"file": file, "reason": "empty mask"})
                continue
            image.instances, small = mask_instances(mask, sample.label, min_area=options.min_area,
                                                    polygon_tolerance=options.polygon_tolerance)
            dropped += small
            if not image.instances:
                skipped.append({"file": file, "reason": f"every mask region is smaller than --min-area "
                                                        f"{options.min_area}"})
                continue
        images.append(image)
    check_unique_names(images)
    if not any(image.instances for image in images):
        raise UserError(f"no defect image of '{category.name}' has a usable mask, so there is nothing to export; "
                        f"check {category.root / 'ground_truth'}")
    return Collected(images, skipped, dropped, background_left_out)
