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
from pathlib import Path

from inspectkit.cli import (
    RESULTS_DEFAULT,
    add_data_args,
    data_root_of,
    refuse_unused_flags,
    resolve_category,
    run,
    script_parser,
)
from inspectkit.errors import UserError
from inspectkit.export import FORMATS, check_link_mode, check_out_dir, choose_split, export_category
from inspectkit.export.options import add_option_args, options_from_args
from inspectkit.export.output import check_outside_export
from inspectkit.export.summary import summary_text
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
    add_option_args(parser)  # the export settings: flags named after ExportOptions' fields, defaults read from it
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


# The flags of one format: refused when --format leaves that format out.
FORMAT_FLAGS = {"sam": ("sam_mask", "sam_positive", "sam_negative", "box_jitter"), "coco": ("coco_segmentation",)}


def check_format_flags(args: argparse.Namespace, formats: tuple[str, ...]) -> None:
    for fmt, dests in FORMAT_FLAGS.items():
        if fmt not in formats:
            refuse_unused_flags(get_args_parser(), args, set(vars(args)) - set(dests), f"without {fmt} in --format")


def main(args: argparse.Namespace) -> dict:
    formats = FORMATS if "all" in args.format else tuple(dict.fromkeys(args.format))
    options = options_from_args(args, formats)  # every number checked before anything else
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

    record = provenance(seed=args.seed, data_root=data_root_of(category), demo=category.demo, command=args.command)
    summary = export_category(category, out, options, split, record, progress=not args.no_progress,
                              out_as_given=out_as_given)
    path = write_json(results / f"export_{category.name}.json", summary)

    for skipped in summary["images"]["skipped_files"]:
        print(f"warning: skipped {one_line(skipped['file'])}: {skipped['reason']}", file=sys.stderr)
    print(summary_text(summary, split.source, out, path))
    return summary


if __name__ == "__main__":
    run(main, get_args_parser())
