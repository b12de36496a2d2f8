"""Benchmark mode: the detector on every category under a data root, one results JSON each, and a summary
(``anomaly_summary.json`` plus a printed table) of ours beside the Gaussian baseline. A category that fails is
reported with its reason; the others still run."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..anomaly_results import METRICS, SUMMARY_NAME, build_summary, summary_row
from ..data import list_categories, load_category, resolve_data_root
from ..errors import UserError
from ..results import ensure_writable_dir, provenance, write_json
from .config import PatchCoreConfig
from .pipeline import run_detection, write_record
from .position import border_warning


def find_categories(root: Path) -> list[str]:
    """The category folders under ``root``; a UserError naming the root when there are none."""
    names = list_categories(root)
    if not names:
        raise UserError(f"--category all: no category folders (with train/ or test/) under {root}; point "
                        "--data-root at the folder that holds them")
    return names


def benchmark(data_root: str | os.PathLike | None, config: PatchCoreConfig, weights: str, *, device: str = "cpu",
              out: str | os.PathLike, baseline: bool = True, figures: bool = True, progress: bool = True,
              command: Sequence[str] | None = None, runtime: str = "auto") -> dict:
    """``anomaly.py --category all``: every category under the data root (``run_benchmark``), then the summary
    with its provenance, written to ``<out>/anomaly_summary.json`` and printed as a table. Returns the summary."""
    root = resolve_data_root(data_root)
    if not root.is_dir():
        raise UserError(f"--category all: data root {root} is not a folder; point --data-root at the folder that "
                        "holds the category folders")
    out = ensure_writable_dir(out)
    summary = run_benchmark(root, config, weights, device=device, out=out, baseline=baseline, figures=figures,
                            progress=progress, command=command, runtime=runtime)
    summary["provenance"] = provenance(seed=config.seed, weights=summary.pop("weights_info"), data_root=root,
                                       command=command)
    path = write_json(out / SUMMARY_NAME, summary)
    print(format_table(summary))
    print(f"wrote {path}")
    return summary


def run_benchmark(root: Path, config: PatchCoreConfig, weights: str, *, device: str = "cpu", out: Path,
                  baseline: bool = True, figures: bool = True, progress: bool = True,
                  command: Sequence[str] | None = None, runtime: str = "auto") -> dict:
    """Run every category under ``root``, writing each category's JSON (``pipeline.write_record``) as soon as it
    is done; ``runtime`` runs the backbone (runtime.RUNTIMES). Returns the summary record (no provenance), derived
    from the per-category files in ``out``: one row per category and a mean row, the settings they share and those
    that differ, and ``weights_info``, the provenance of the weights (None when no category ran)."""
    failed, weights_info = [], None
    for name in find_categories(root):
        try:
            started = time.perf_counter()
            category = load_category(root, name, progress=progress, prewarm=config.detector_shape)
            record, detector = run_detection(category, config, weights, device=device, baseline=baseline, out=out,
                                             figures=figures, progress=progress,
                                             category_s=time.perf_counter() - started, runtime=runtime)
        except UserError as exc:
            failed.append({"category": name, "status": "failed", "reason": str(exc)})
            print(f"{name}: failed: {exc}")
            continue
        weights_info = detector.weights
        write_record(out, record, weights_info, category, command, refresh_summary=False)
        print_row(summary_row(record))
        warning = border_warning(record.get("position"))
        if warning:
            print(f"{name}: {warning}")
        gc.collect()  # the next category's peak memory should not include this one's leftovers
    return {**build_summary(out, failed), "weights": weights, "weights_info": weights_info}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


HEADER = (f"{'category':<16} {'image AUROC':>17} {'pixel AUROC':>17} {'PRO':>17} {'seconds':>8} {'peak MB':>8}\n"
          f"{'':<16} {'ours / baseline':>17} {'ours / baseline':>17} {'ours / baseline':>17}")


def format_row(row: dict) -> str:
    if row.get("status") == "failed":
        return f"{row['category']:<16} failed: {row['reason']}"
    cells = [f"{_fmt(row[m]):>7} / {_fmt(row[f'baseline_{m}']):<7}" for m in METRICS]
    return f"{row['category']:<16} {' '.join(cells)} {_fmt(row['seconds'], 1):>8} {_fmt(row['peak_rss_mb'], 0):>8}"


def print_row(row: dict) -> None:
    print(format_row(row))


def format_table(summary: dict) -> str:
    lines = [HEADER, *(format_row(r) for r in summary["categories"])]
    mean = summary["mean"]
    if mean["categories"]:
        lines.append(format_row({**mean, "category": f"mean of {mean['categories']}", "status": "ok"}))
    return "\n".join(lines)
