"""Export a category's defect masks as training data for detectors and segmenters: YOLO, YOLO-seg, COCO and SAM.

Examples:
    python export_labels.py --demo --out exports/demo                  # synthetic data, every format
    python export_labels.py --category bottle --data-root /path/to/mvtec --format all --out exports/bottle
    python export_labels.py --category bottle --format yolo yolo-seg --imgsz 640 --no-background \\
        --out exports/bottle-640 --overwrite
    python export_labels.py --category bottle --format coco --coco-segmentation rle --link sym --out exports/coco

Writes, built in a staging folder that replaces <out> only when complete:
    <out>/yolo/      dataset.yaml, images/<part>/, labels/<part>/*.txt   (Ultralytics detect; empty = background)
    <out>/yolo-seg/  the same, with polygon rows                          (Ultralytics segment)
    <out>/coco/      annotations/instances_<part>.json, images/<part>/    (Detectron2, MMDetection, torchvision)
    <out>/sam/       <part>.jsonl (one line per instance), masks/<part>/, images/<part>/
    <out>/export_summary.json, and the same summary as <results>/export_<category>.json
Each image is copied once (or linked with --link); the other formats hard-link that copy where they can.
The parts (train/val/test) are split 0 of <results>/splits_<category>.json (train.py's) when it exists, so the
classifier's held-out test images stay held out; otherwise a new split, the one train.py --seed would make,
is saved as <out>/splits_<category>.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from inspectkit.cli import (
    RESULTS_DEFAULT,
    add_data_args,
    data_root_of,
    refuse_unused_flags,
    resolve_category,
    run,
    script_parser,
    seed,
)
from inspectkit.errors import UserError
from inspectkit.export import (
    FORMATS,
    LINK_MODES,
    MASK_KINDS,
    SEGMENTATIONS,
    ExportOptions,
    check_link_mode,
    check_out_dir,
    choose_split,
    export_category,
)
from inspectkit.names import one_line
from inspectkit.results import ensure_writable_dir, provenance, write_json


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    add_data_args(parser)
    parser.add_argument("--format", nargs="+", default=["all"], choices=[*FORMATS, "all"],
                        help="one or more formats to write")
    parser.add_argument("--out", default=None,
                        help="folder for the exported dataset, outside the data; if not given, exports/<category>")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export in --out (only folders an earlier export wrote)")
    parser.add_argument("--results", default=RESULTS_DEFAULT,
                        help="folder for export_<category>.json, and where splits_<category>.json is looked for; "
                             "results/demo with --demo")
    parser.add_argument("--splits", default=None,
                        help="split manifest to take split 0 from; if not given, <results>/splits_<category>.json "
                             "if it exists, else a new seeded split saved in --out")
    # The export settings: flags named after ExportOptions' fields, defaults read from it.
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
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def check_numbers(args: argparse.Namespace) -> None:
    if args.min_area < 1:
        raise UserError(f"--min-area must be at least 1 pixel (got {args.min_area})")
    if args.polygon_tolerance < 0:
        raise UserError(f"--polygon-tolerance must be 0 or more (got {args.polygon_tolerance})")
    if args.imgsz is not None and args.imgsz < 32:
        raise UserError(f"--imgsz must be at least 32 (got {args.imgsz})")
    if args.sam_positive < 1 or args.sam_negative < 0:
        raise UserError("--sam-positive must be at least 1 and --sam-negative at least 0")
    if not 0 <= args.box_jitter < 1:
        raise UserError(f"--box-jitter must be in [0, 1) (got {args.box_jitter})")


# The flags of one format: refused when --format leaves that format out.
FORMAT_FLAGS = {"sam": ("sam_mask", "sam_positive", "sam_negative", "box_jitter"), "coco": ("coco_segmentation",)}


def check_format_flags(args: argparse.Namespace, formats: tuple[str, ...]) -> None:
    for fmt, dests in FORMAT_FLAGS.items():
        if fmt not in formats:
            refuse_unused_flags(get_args_parser(), args, set(vars(args)) - set(dests), f"without {fmt} in --format")


def check_outside_export(out: Path, results: Path, manifest: Path) -> None:
    """The export replaces ``out`` as a whole: the split manifest it reads and the results folder it writes must
    lie outside it, or the swap deletes the one (this run) or the other (the next --overwrite)."""
    if manifest.is_file() and manifest.resolve().is_relative_to(out):
        raise UserError(f"the split manifest {manifest} lies inside --out {out}, which the export replaces as a "
                        "whole; copy it outside first and pass it with --splits")
    if results.resolve().is_relative_to(out):
        raise UserError(f"--results {results} lies inside --out {out}, which the export replaces as a whole; "
                        "choose a --results folder outside it")


def main(args: argparse.Namespace) -> dict:
    check_numbers(args)
    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    check_format_flags(args, formats)
    category = resolve_category(args, progress=not args.no_progress)
    out_as_given = str(args.out or Path("exports") / category.name)
    out = check_out_dir(out_as_given, category.root, args.overwrite)
    check_link_mode(args.link, category.root, out.parent, resize=args.imgsz is not None)
    if args.splits is not None and not Path(args.splits).is_file():
        raise UserError(f"--splits {args.splits} is not a file; pass a split manifest made by train.py, "
                        "or leave --splits out to make a new split")
    manifest = Path(args.splits or Path(args.results) / f"splits_{category.name}.json")
    check_outside_export(out, Path(args.results), manifest)
    results = ensure_writable_dir(args.results, "--results")
    split = choose_split(category, manifest, args.seed)

    options = ExportOptions(formats=formats, **{f.name: getattr(args, f.name) for f in fields(ExportOptions)
                                                if f.name != "formats"})
    record = provenance(seed=args.seed, data_root=data_root_of(category), demo=category.demo, command=args.command)
    summary = export_category(category, out, options, split, record, progress=not args.no_progress,
                              out_as_given=out_as_given)
    path = write_json(results / f"export_{category.name}.json", summary)

    for skipped in summary["images"]["skipped_files"]:
        print(f"warning: skipped {one_line(skipped['file'])}: {skipped['reason']}", file=sys.stderr)
    instances = summary["instances"]
    per_class = ", ".join(f"{name} {n}" for name, n in instances["per_class"].items())
    print(f"{instances['total']} instances ({per_class}) in {summary['images']['with_instances']} defect images, "
          f"{summary['images']['background']} background images; split from {split.source}")
    print(f"wrote {', '.join(formats)} to {out} and the summary to {path}")
    return summary


if __name__ == "__main__":
    run(main, get_args_parser())
