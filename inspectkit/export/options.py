"""export_labels.py's export settings on the command line: one flag per ``ExportOptions`` field, named after it
(kebab-case), its default read from it; and the options built from the parsed flags, where every value is checked."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..cli import seed
from .build import ExportOptions
from .coco import SEGMENTATIONS
from .output import LINK_MODES
from .sam import MASK_KINDS


def add_option_args(parser: argparse.ArgumentParser) -> None:
    """The flags of every ``ExportOptions`` field but ``formats`` (``--format``, which also takes ``all``)."""
    parser.add_argument("--seed", type=seed, default=ExportOptions.seed,
                        help="seed of a new split, the point prompts and the box jitter")
    parser.add_argument("--min-area", type=int, default=ExportOptions.min_area,
                        help="drop mask regions smaller than this many pixels, after --imgsz")
    parser.add_argument("--polygon-tolerance", type=float, default=ExportOptions.polygon_tolerance,
                        help="simplify polygons by up to this many pixels; 0 keeps every contour point, "
                             "0.25 only drops points on straight runs")
    parser.add_argument("--no-background", dest="background", action="store_false",
                        default=ExportOptions.background,
                        help="leave out good images (by default they are background images with empty labels)")
    parser.add_argument("--link", default=ExportOptions.link, choices=LINK_MODES,
                        help="copy images, or hard- or sym-link them to the originals")
    parser.add_argument("--imgsz", type=int, default=ExportOptions.imgsz,
                        help="resize images and masks so the longer side is N pixels, before labelling; "
                             "if not given, keep the native size")
    parser.add_argument("--coco-segmentation", default=ExportOptions.coco_segmentation, choices=SEGMENTATIONS,
                        help="COCO masks as polygons or exact RLE")
    parser.add_argument("--sam-mask", default=ExportOptions.sam_mask, choices=MASK_KINDS,
                        help="SAM masks as one PNG per instance or RLE inside the JSONL")
    parser.add_argument("--sam-positive", "--sam-points", type=int, default=ExportOptions.sam_positive,
                        help="positive point prompts per instance, sampled inside the mask")
    parser.add_argument("--sam-negative", "--sam-negatives", type=int, default=ExportOptions.sam_negative,
                        help="negative point prompts per instance, sampled near but outside the mask")
    parser.add_argument("--box-jitter", type=float, default=ExportOptions.box_jitter,
                        help="move each side of the SAM box prompt by up to this share of the box size; "
                             "0 is the exact box")


def options_from_args(args: argparse.Namespace, formats: tuple[str, ...]) -> ExportOptions:
    """The options the flags of ``add_option_args`` describe, for ``formats``; a UserError naming the flag for a
    bad value (``ExportOptions`` checks them)."""
    return ExportOptions(formats=formats, **{f.name: getattr(args, f.name) for f in fields(ExportOptions)
                                             if f.name != "formats"})
