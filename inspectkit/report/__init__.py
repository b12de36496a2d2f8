"""The homework report: the result JSON under results/ rendered into a PDF of at most three pages, a provenance
record beside it, and the README's generated block.

Layers, each importing only those above it:
    inputs.py          find and read the result files of one category (and every category's detector result)
    classification.py  Q2 and Q3 from the attempt files; detection.py: Q4 from the detector files
    references.py      the works cited; sections.py: the whole template context (title, Q1, Q5, placeholders)
    words.py           word counts of the written answers; render.py: Jinja, WeasyPrint, page budget and layout
    provenance.py      report_provenance.json; readme.py: the README block and the table of result files
"""

from .inputs import ATTEMPTS, Inputs, collect_inputs, find_category, input_files, missing_message
from .provenance import PROVENANCE_NAME, report_provenance
from .readme import README_END, README_START, readme_results, results_files, update_readme
from .render import MAX_BLANK, MAX_PAGES, PageBudgetError, Rendered, render_html, render_report, write_atomic
from .sections import DEFAULT_COURSE, DEFAULT_HOMEWORK, build_context
from .words import WORD_TARGETS, WORD_TOLERANCE, count_words, word_budget, word_counts

__all__ = ["ATTEMPTS", "DEFAULT_COURSE", "DEFAULT_HOMEWORK", "MAX_BLANK", "MAX_PAGES", "PROVENANCE_NAME",
           "README_END", "README_START", "WORD_TARGETS", "WORD_TOLERANCE", "Inputs", "PageBudgetError", "Rendered",
           "build_context", "collect_inputs", "count_words", "find_category", "input_files", "missing_message",
           "readme_results", "render_html", "render_report", "report_provenance", "results_files", "update_readme",
           "word_budget", "word_counts", "write_atomic"]
