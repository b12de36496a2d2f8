"""The per-category detector results, ``anomaly_<category>.json``, as the one source of the detector's numbers:
finding them in a results folder, comparing the settings each was made with, and the summary
(``anomaly_summary.json``) that is derived from them whenever it is written. Needs no torch: the report and the
README read the detector's numbers through here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .results import read_json, write_json

METRICS = ("image_auroc", "pixel_auroc", "pro")
SUMMARY_NAME = "anomaly_summary.json"
# Config fields that follow from the category's images or from the machine, not from a chosen setting. The weights
# are compared by their provenance (sha256, or imagenet / none), not by the path they were read from.
NOT_SETTINGS = frozenset({"input_shape", "pixel_metrics_resolution", "device", "threads", "weights"})
SUMMARY_NOTE = ("derived from the anomaly_<category>.json files in this folder when written (by anomaly.py "
                "--category all, and again by each later single-category run); those files are the source of truth")


def category_file_name(category: str) -> str:
    return f"anomaly_{category}.json"


def is_category_record(data: Any, file_name: str) -> bool:
    """Whether ``data`` (read from ``file_name``) is one category's detector result, not a bench or the summary."""
    return (isinstance(data, dict) and isinstance(data.get("category"), str)
            and isinstance(data.get("metrics"), dict) and isinstance(data.get("config"), dict)
            and file_name == category_file_name(data["category"]))


def read_category_records(folder: str | os.PathLike) -> dict[str, dict]:
    """Every category's detector result in ``folder``, by category name (sorted); unreadable files are skipped."""
    records = {}
    for path in sorted(Path(folder).glob("anomaly_*.json")):
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        if is_category_record(data, path.name):
            records[data["category"]] = data
    return records


def settings(record: Mapping) -> dict[str, Any]:
    """The settings a record was made with: its config without the fields that follow from the data or the
    machine, and the weights by identity (sha256 of a file, else imagenet / none)."""
    config = {k: v for k, v in record["config"].items() if k not in NOT_SETTINGS}
    weights = (record.get("provenance") or {}).get("weights") or {}
    config["weights"] = weights.get("sha256") or weights.get("spec") or record["config"].get("weights")
    return config


def settings_differences(records: Mapping[str, Mapping]) -> dict[str, dict[str, Any]]:
    """Each setting whose value is not the same in every record: setting -> {category: value} (None where a record
    lacks it). Empty when all records were made with the same settings."""
    every = [settings(r) for r in records.values()]
    keys = sorted({k for s in every for k in s})
    return {key: {cat: s.get(key) for cat, s in zip(records, every, strict=True)} for key in keys
            if len({repr(s.get(key)) for s in every}) > 1}


def summary_row(record: Mapping) -> dict:
    """One category's row of the summary, copied from its record."""
    ours, base = record["metrics"], record.get("baseline") or {}
    prov = record.get("provenance") or {}
    return {"category": record["category"], "status": "ok", "file": category_file_name(record["category"]),
            **{m: ours.get(m) for m in METRICS}, **{f"baseline_{m}": base.get(m) for m in METRICS},
            "seconds": (record.get("timings") or {}).get("total_s"), "peak_rss_mb": record.get("peak_rss_mb"),
            "input_shape": record["config"].get("input_shape"),
            "test_images": sum((record.get("counts") or {}).get("test", {}).values()) or None,
            "time_utc": prov.get("time_utc"), "command": prov.get("command")}


def mean_row(rows: Iterable[Mapping]) -> dict:
    """Means over the categories that ran (a metric only over the categories that have it)."""
    rows = list(rows)
    done = [r for r in rows if r["status"] == "ok"]
    mean = {"categories": len(done), "failed": len(rows) - len(done)}
    for key in (*METRICS, *(f"baseline_{m}" for m in METRICS), "seconds", "peak_rss_mb"):
        values = [r[key] for r in done if r.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
    return mean


def build_summary(folder: str | os.PathLike, failed: Iterable[Mapping] = ()) -> dict:
    """The summary of every category's detector result in ``folder``, read from the files themselves, with the
    settings they share and those that differ. ``failed``: rows ``{"category", "status": "failed", "reason"}`` of
    categories that failed in the run that writes the summary; they replace any older file of that category."""
    failed = {row["category"]: dict(row) for row in failed}
    records = {c: r for c, r in read_category_records(folder).items() if c not in failed}
    rows = sorted([*(summary_row(r) for r in records.values()), *failed.values()], key=lambda r: r["category"])
    differences = settings_differences(records)
    first = settings(next(iter(records.values()))) if records else {}
    shared = {k: v for k, v in first.items() if k not in differences}
    return {"categories": rows, "mean": mean_row(rows), "config": shared, "config_differences": differences,
            "same_settings": not differences, "note": SUMMARY_NOTE}


def stale_rows(summary: Mapping, folder: str | os.PathLike) -> list[str]:
    """The categories whose summary row no longer matches their file in ``folder`` (or whose file is gone)."""
    records = read_category_records(folder)
    stale = []
    for row in summary.get("categories", []):
        if row.get("status") != "ok":
            continue
        record = records.get(row["category"])
        if record is None or any(row.get(k) != v for k, v in summary_row(record).items()):
            stale.append(row["category"])
    return stale


def write_summary(folder: str | os.PathLike, provenance: dict, failed: Iterable[Mapping] = ()) -> Path:
    """Write ``<folder>/anomaly_summary.json`` derived from the per-category files there now."""
    summary = build_summary(folder, failed)
    summary["provenance"] = provenance
    return write_json(Path(folder) / SUMMARY_NAME, summary)


def failed_rows(folder: str | os.PathLike) -> list[dict]:
    """The failed rows of the summary already in ``folder`` whose category still has no result file there: a
    single-category run that refreshes the summary keeps them."""
    path = Path(folder) / SUMMARY_NAME
    try:
        rows = read_json(path)["categories"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    have = read_category_records(folder)
    return [r for r in rows if isinstance(r, dict) and r.get("status") == "failed" and r.get("category") not in have]
