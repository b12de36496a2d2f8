"""The report's provenance, kept off the pages: ``report_provenance.json`` beside the PDF records the command that
built it, the commit, and every result file and figure it read, each with its checksum and its own provenance."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path

from ..results import git_commit, read_json, sha256_file
from .inputs import Inputs, source_files

PROVENANCE_NAME = "report_provenance.json"


def _source(path: Path, results_dir: Path) -> dict:
    prov = {}
    if path.suffix == ".json":
        try:
            prov = read_json(path).get("provenance") or {}
        except (OSError, ValueError, AttributeError):
            prov = {}
    return {"file": path.relative_to(results_dir).as_posix(), "sha256": sha256_file(path),
            **{k: prov.get(k) for k in ("command", "git_commit", "time_utc", "seed", "weights", "demo_data")
               if k in prov}}


def figures_shown(context: Mapping) -> list[str]:
    """The figures the pages show, relative to the results folder."""
    shown = [context.get("q1_figure")]
    shown += [(context.get(key) or {}).get("figure") for key in ("q4", "q5")]
    return [f for f in shown if f]


def report_provenance(inputs: Inputs, context: Mapping, *, command: str, pages: int, blank_shares: list[float],
                      word_counts: Mapping[str, int], figure_heights: Mapping[str, float]) -> dict:
    """The record written beside the PDF."""
    results_dir = inputs.results_dir
    return {
        "report": {"command": command, "git_commit": git_commit(),
                   "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   "category": inputs.category, "pages": pages,
                   "blank_share_per_page": [round(b, 3) for b in blank_shares],
                   "words_per_answer": dict(word_counts),
                   "figure_heights_mm": {k: round(v, 1) for k, v in figure_heights.items()}},
        "data": {"root_name": Path(inputs.data_root).name if inputs.data_root else None, "demo": inputs.demo},
        "sources": [_source(p, results_dir) for p in source_files(inputs) if p.is_file()],
        "figures": [_source(results_dir / f, results_dir) for f in figures_shown(context)],
    }
