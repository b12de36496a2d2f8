"""Dataset statistics for one MVTec AD-layout category (homework question 1).

Examples:
    python stats.py --demo                                          # synthetic data, no download
    python stats.py --category bottle --data-root /path/to/mvtec
    python stats.py --category all --data-root /path/to/mvtec
    python stats.py --category hazelnut --download                  # fetch MVTec AD, keep only hazelnut

Prints a table and writes ``<out>/stats_<category>.json`` plus two figures in ``<out>/figures/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspectkit import download
from inspectkit.cli import add_data_args, add_out_arg, refuse_unused_flags, resolve_category, run, script_parser
from inspectkit.data import list_categories, resolve_data_root
from inspectkit.errors import UserError
from inspectkit.figures.stats import counts_bar_chart, samples_grid
from inspectkit.names import one_line
from inspectkit.results import ensure_writable_dir, provenance, write_json
from inspectkit.stats import category_stats, format_table


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    add_data_args(parser)
    add_out_arg(parser)
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (JSON and table only)")
    group = parser.add_argument_group("download (MVTec's official archive, about 4.9 GB)")
    group.add_argument("--download", action="store_true",
                       help="download the archive into --data-root (resumable), verify it, extract --category")
    group.add_argument("--url", default=download.MVTEC_URL, help="archive URL (MVTec's official address)")
    group.add_argument("--sha256", default=download.MVTEC_SHA256, help="expected sha256 of the archive")
    return parser


def stats_for(args: argparse.Namespace, category_name: str | None) -> dict:
    """Validate one category, write its JSON and figures, print its table; return the stats record."""
    category = resolve_category(argparse.Namespace(**{**vars(args), "category": category_name}))
    stats = category_stats(category)
    out = Path(args.out)
    if not args.no_figures:
        stats["figures"] = {
            "counts": counts_bar_chart(stats, out / "figures" / f"stats_{category.name}_counts.png").name,
            "samples": samples_grid(category, out / "figures" / f"stats_{category.name}_samples.png").name,
        }
    stats["provenance"] = provenance(data_root=category.root.parent, demo=category.demo, command=args.command)
    write_json(out / f"stats_{category.name}.json", stats)
    print(format_table(stats))
    if category.skipped_files:
        print(f"warning: skipped {len(category.skipped_files)} non-image or hidden files "
              f"(e.g. {one_line(str(category.skipped_files[0]))})", file=sys.stderr)
    for problem in category.problems:  # one line each, whatever the file's name holds
        print(f"problem: {one_line(problem['file'])}: {one_line(problem['problem'])}", file=sys.stderr)
    print(f"wrote {out / f'stats_{category.name}.json'}")
    return stats


def main(args: argparse.Namespace) -> list[dict]:
    if not args.download:
        refuse_unused_flags(get_args_parser(), args, set(vars(args)) - {"url", "sha256"}, "without --download")
    ensure_writable_dir(args.out)
    if args.download:
        if args.demo:
            raise UserError("--download and --demo exclude each other")
        root = resolve_data_root(args.data_root)
        wanted = None if args.category in (None, "all") else [args.category]
        download.fetch_mvtec(root, wanted, url=args.url, sha256=args.sha256)
    if args.category == "all" and not args.demo:
        root = resolve_data_root(args.data_root)
        names = list_categories(root) if root.is_dir() else []
        if not names:
            resolve_category(argparse.Namespace(**{**vars(args), "category": None}))  # raises the helpful error
        records, broken = [], []
        for name in names:  # a broken category is reported in the overview; the others still get their stats
            try:
                records.append(stats_for(args, name))
            except UserError as exc:
                broken.append({"category": name, "problem": str(exc)})
                print(f"problem: category {one_line(name)} skipped: {one_line(str(exc))}", file=sys.stderr)
        if not records:
            raise UserError(f"no category under {root} could be read; first: {broken[0]['problem']}")
        overview = {
            "categories": [{k: r[k] for k in ("category", "num_defect_classes", "num_images", "split",
                                              "good_total", "defect_total")} for r in records],
            "broken": broken,
            "provenance": provenance(data_root=root, command=args.command),
        }
        write_json(Path(args.out) / "stats_overview.json", overview)
        return records
    return [stats_for(args, args.category)]


if __name__ == "__main__":
    run(main, get_args_parser())
