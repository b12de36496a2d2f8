"""Detection and segmentation training data from a category's ground-truth masks: YOLO, YOLO-seg, COCO and SAM.

``export_category`` collects the instances, writes each format into a staging folder that replaces ``--out``
only when complete, and returns the summary behind ``results/export_<category>.json``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ..data import Category
from ..results import write_json
from .build import FORMATS, Collected, ExportOptions, collect
from .coco import SEGMENTATIONS, write_coco
from .output import LINK_MODES, MARKER, ImagePlacer, check_link_mode, check_out_dir, staged_dir
from .sam import MASK_KINDS, write_sam
from .split import SplitChoice, choose_split
from .summary import summarize
from .yolo import write_yolo

__all__ = ["FORMATS", "LINK_MODES", "MASK_KINDS", "SEGMENTATIONS", "ExportOptions", "check_link_mode",
           "check_out_dir", "choose_split", "export_category"]

TEST_PART_NOTE = ("the split's test part is kept as a third part: Ultralytics' optional 'test' key, "
                  "instances_test.json and test.jsonl, so the classifier's held-out images stay held out here")


def write_formats(stage: Path, final: Path, collected: Collected, class_names: list[str], category_name: str,
                  options: ExportOptions, provenance: dict | None = None, progress: bool = True) -> dict[str, dict]:
    """Write each requested format into ``stage/<format>/``; paths inside the files point at ``final``."""
    placer = ImagePlacer(options.link, options.imgsz)
    written: dict[str, dict] = {}
    for fmt in options.formats:
        root = stage / fmt
        images = tqdm(collected.images, desc=f"writing {fmt}", unit="img", disable=not progress, leave=False)
        if fmt in ("yolo", "yolo-seg"):
            written[fmt] = write_yolo(root, final / fmt, images, class_names, placer, segment=fmt == "yolo-seg")
        elif fmt == "coco":
            written[fmt] = write_coco(root, images, class_names, category_name, placer, options.coco_segmentation,
                                      provenance)
        elif fmt == "sam":
            written[fmt] = write_sam(root, images, placer, options)
    return written


def export_category(category: Category, out: Path, options: ExportOptions, split: SplitChoice,
                    provenance: dict, progress: bool = True, out_as_given: str | None = None) -> dict:
    """Export ``category`` into ``out`` (checked by ``check_out_dir``) and return the summary written with it.

    ``out_as_given`` is how the summary names the folder (default: ``out``), so results need no absolute paths.
    """
    collected = collect(category, split.part_of, options, progress=progress)
    class_names = list(category.defect_classes)
    summary = {"category": category.name, "out": out_as_given or str(out), "settings": asdict(options),
               "split": {"source": split.source, "split_seed": split.seed, "test_part": TEST_PART_NOTE,
                         "saved_as": f"splits_{category.name}.json" if split.manifest else None},
               **summarize(collected, class_names)}
    with staged_dir(out) as stage:
        if split.manifest is not None:
            write_json(stage / f"splits_{category.name}.json", {**split.manifest, "provenance": provenance})
        summary["formats"] = write_formats(stage, out, collected, class_names, category.name, options, provenance,
                                           progress)
        summary["provenance"] = provenance
        write_json(stage / MARKER, summary)
    return summary
