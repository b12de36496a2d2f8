"""Benchmark mode: the detector on every category under a data root, one results JSON each, and a summary
(``anomaly_summary.json`` plus a printed table) of ours beside the Gaussian baseline. A category that fails is
reported with its reason; the others still run."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import Category, list_categories, load_category
from ..errors import UserError
from .geometry import input_shape
from .patchcore import PatchCoreConfig
from .pipeline import run_detection
from .position import border_warning

METRICS = ("image_auroc", "pixel_auroc", "pro")


def find_categories(root: Path) -> list[str]:
    """The category folders under ``root``; a UserError naming the root when there are none."""
    names = list_categories(root)
    if not names:
        raise UserError(f"--category all: no category folders (with train/ or test/) under {root}; point "
                        "--data-root at the folder that holds them")
    return names


def run_benchmark(root: Path, config: PatchCoreConfig, weights: str, *, device: str = "cpu", out: Path,
                  baseline: bool = True, figures: bool = True, progress: bool = True,
                  write_record: Callable[[Category, dict, dict], Path], runtime: str = "auto") -> dict:
    """Run every category under ``root``; ``write_record(category, record, weights_info)`` writes each category's
    JSON as soon as it is done. Returns the summary record (no provenance): one row per category and a mean row,
    and ``weights_info``, the provenance of the weights (None when no category ran)."""
    rows, weights_info = [], None
    for name in find_categories(root):
        try:
            started = time.perf_counter()
            category = load_category(root, name, progress=progress,
                                     prewarm=lambda sizes: input_shape(sizes, config.image_size))
            record, detector = run_detection(category, config, weights, device=device, baseline=baseline, out=out,
                                             figures=figures, progress=progress,
                                             category_s=time.perf_counter() - started, runtime=runtime)
        except UserError as exc:
            rows.append({"category": name, "status": "failed", "reason": str(exc)})
            print(f"{name}: failed: {exc}")
            continue
        weights_info = detector.weights
        path = write_record(category, record, weights_info)
        rows.append(summary_row(record, path))
        print_row(rows[-1])
        warning = border_warning(record.get("position"))
        if warning:
            print(f"{name}: {warning}")
        gc.collect()  # the next category's peak memory should not include this one's leftovers
    return {"categories": rows, "mean": mean_row(rows), "config": config.as_dict(), "weights": weights,
            "weights_info": weights_info}


def summary_row(record: dict, path: Path) -> dict:
    ours, base = record["metrics"], record.get("baseline") or {}
    return {"category": record["category"], "status": "ok", "file": path.name,
            **{m: ours[m] for m in METRICS}, **{f"baseline_{m}": base.get(m) for m in METRICS},
            "seconds": record["timings"]["total_s"], "peak_rss_mb": record["peak_rss_mb"],
            "input_shape": record["config"]["input_shape"], "test_images": sum(record["counts"]["test"].values())}


def mean_row(rows: list[dict]) -> dict:
    """Means over the categories that ran (a metric only over the categories that have it)."""
    done = [r for r in rows if r["status"] == "ok"]
    mean = {"categories": len(done), "failed": len(rows) - len(done)}
    for key in (*METRICS, *(f"baseline_{m}" for m in METRICS), "seconds", "peak_rss_mb"):
        values = [r[key] for r in done if r.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
    return mean


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
