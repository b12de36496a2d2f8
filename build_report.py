"""Build the report a student hands in (homework questions 1-5) from the result JSON under results/.

Examples:
    python build_report.py --pdf --name "Ada Lovelace" --student-id 123456789
    python build_report.py --html --pdf --course "Computer Vision" --homework "Homework 3"
    python build_report.py --results /tmp/demo --pdf          # e.g. after python run_all.py --demo --out /tmp/demo
    python build_report.py --pdf --allow-missing              # placeholders for results not made yet
    python build_report.py --pdf --readme README.md           # and the README's generated results block

Writes <results>/report.pdf (at most 3 pages; no script names, commits or paths on the pages) and, beside it,
report_provenance.json: the command, the commit and every result file read, with checksums.
Exit codes: 2 for bad input or missing results (the message lists the command that makes each one),
1 when the report cannot fit within 3 pages even with smaller figures (the message names the section).
Q5's figure is drawn from the export files that export_<category>.json names, when they are on this machine;
otherwise the one drawn earlier is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspectkit.cli import run, script_parser
from inspectkit.errors import UserError
from inspectkit.figures.export import draw_export_figure
from inspectkit.report import (
    DEFAULT_COURSE,
    DEFAULT_HOMEWORK,
    MAX_PAGES,
    PROVENANCE_NAME,
    build_context,
    collect_inputs,
    missing_message,
    readme_results,
    render_report,
    report_provenance,
    update_readme,
    word_budget,
    write_atomic,
)
from inspectkit.report.inputs import command
from inspectkit.results import command_line, ensure_writable_dir, write_json


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--results", default="results", help="folder holding the result JSON and figures/; "
                        "the report is written there too")
    parser.add_argument("--category", default=None,
                        help="category to report on; if not given, the one with a stats_<category>.json in "
                             "--results")
    parser.add_argument("--pdf", action="store_true", help="write <results>/report.pdf (the default output)")
    parser.add_argument("--html", action="store_true", help="write <results>/report.html, for preview")
    parser.add_argument("--name", default="", help="the student's name for the title block (a blank line if not "
                                                   "given)")
    parser.add_argument("--student-id", default="", help="the student ID for the title block (a blank line if not "
                                                         "given)")
    parser.add_argument("--course", default=DEFAULT_COURSE, help="course name for the title block")
    parser.add_argument("--homework", default=DEFAULT_HOMEWORK, help="homework title for the title block")
    parser.add_argument("--readme", default=None, metavar="PATH",
                        help="also replace the generated block of this Markdown file (e.g. README.md) between "
                             "'<!-- results:start -->' and '<!-- results:end -->': the results and every result file")
    parser.add_argument("--allow-missing", action="store_true",
                        help="render a marked placeholder for each missing result instead of exiting 2")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Render the report; returns the paths written, the page count, blank share per page and word counts."""
    inputs = collect_inputs(args.results, args.category)
    if inputs.missing and not args.allow_missing:  # before anything is written
        raise UserError(missing_message(inputs))
    out_dir = ensure_writable_dir(args.results, "--results")
    figure_note = None
    if inputs.has("export"):  # Q5's figure, from the export files when they are here
        remake = command("export_labels.py", inputs, "--out", str(inputs.found["export"].get("out") or "DIR"),
                         "--overwrite", out_flag="--results")
        figure_note = draw_export_figure(out_dir, inputs.category, inputs.found["export"], remake)
    context = build_context(inputs, name=args.name, student_id=args.student_id, course=args.course,
                            homework=args.homework, allow_missing=args.allow_missing)
    rendered = render_report(context, base_url=out_dir)

    # before anything is written, so that the commit it records is not marked dirty by this run's own output
    record = report_provenance(inputs, context, command=command_line(args.command),
                               pages=rendered.pages, blank_shares=rendered.blank_shares,
                               word_counts=rendered.word_counts, figure_heights=rendered.figure_heights)
    written = {}
    if args.html:
        written["html"] = write_atomic(out_dir / "report.html", rendered.html)
    if args.pdf or not args.html:
        written["pdf"] = write_atomic(out_dir / "report.pdf", rendered.document.write_pdf())
    written["provenance"] = write_json(out_dir / PROVENANCE_NAME, record)
    if args.readme:
        written["readme"] = update_readme(args.readme, readme_results(context, args.results))

    blank = ", ".join(f"{b:.0%}" for b in rendered.blank_shares)
    print(f"category {inputs.category}: {rendered.pages} page(s) of at most {MAX_PAGES}; blank per page {blank}")
    for key, count in word_budget(rendered.word_counts).items():
        mark = "placeholder" if context[key] is None else "ok" if count["ok"] else "OUTSIDE ±20 %"
        print(f"  {key.upper()}: {count['words']:4d} words (target {count['target']}) {mark}")
    if inputs.missing:
        print(f"  placeholders for {len(inputs.missing)} missing result file(s)")
    if figure_note:
        print(f"  {figure_note}")
    for kind, path in written.items():
        print(f"wrote {kind.upper()}: {path}")
    return {"paths": {k: Path(v) for k, v in written.items()}, "pages": rendered.pages,
            "blank_shares": rendered.blank_shares, "word_counts": rendered.word_counts,
            "figure_heights": rendered.figure_heights}


if __name__ == "__main__":
    run(main, get_args_parser())
