"""The per-category detector files as the one source of the detector's numbers: finding them, comparing their
settings, and the summary derived from them (and checked against them)."""

from __future__ import annotations

import pytest

from inspectkit.anomaly_results import (
    SUMMARY_NAME,
    build_summary,
    failed_rows,
    read_category_records,
    settings_differences,
    stale_rows,
    write_summary,
)
from inspectkit.results import read_json, write_json


def record(category, image_auroc, *, seed=0, sha="ab" * 32, shape=(128, 128), **config):
    """anomaly_<category>.json as anomaly.py writes it (the fields the summary reads)."""
    return {"category": category, "metrics": {"image_auroc": image_auroc, "pixel_auroc": 0.9, "pro": 0.8},
            "baseline": {"image_auroc": image_auroc - 0.1, "pixel_auroc": 0.85, "pro": None},
            "config": {"arch": "mobilenet_v2", "image_size": 128, "coreset_ratio": 0.1, "seed": seed,
                       "input_shape": list(shape), "device": "cpu", "threads": 2, "weights": f"/x/{category}.pth",
                       **config},
            "counts": {"test": {"good": 4, "crack": 3}}, "timings": {"total_s": 2.5}, "peak_rss_mb": 500.0,
            "provenance": {"command": f"anomaly.py --category {category}", "time_utc": "2026-01-01T00:00:00+00:00",
                           "weights": {"spec": "file", "sha256": sha}}}


def test_only_category_records_are_read(tmp_path):
    write_json(tmp_path / "anomaly_bottle.json", record("bottle", 0.99))
    write_json(tmp_path / "anomaly_screw.json", record("screw", 0.95))
    write_json(tmp_path / "anomaly_bench.json", {"rows": []})  # a bench file, not a category
    write_json(tmp_path / "anomaly_copy.json", record("bottle", 0.5))  # names another category than its file
    (tmp_path / "anomaly_broken.json").write_text("{")
    assert list(read_category_records(tmp_path)) == ["bottle", "screw"]
    assert read_category_records(tmp_path)["bottle"]["metrics"]["image_auroc"] == 0.99


def test_settings_differences_ignore_what_follows_from_the_data_or_the_machine():
    same = {"bottle": record("bottle", 0.9, shape=(128, 128)), "wide": record("wide", 0.9, shape=(96, 192))}
    assert settings_differences(same) == {}  # other input shapes and weight paths, the same file and settings
    other = {**same, "screw": record("screw", 0.9, seed=1, sha="cd" * 32, scoring="position-aware")}
    diff = settings_differences(other)
    assert diff["seed"] == {"bottle": 0, "wide": 0, "screw": 1}
    assert diff["weights"]["screw"] == "cd" * 32
    assert diff["scoring"] == {"bottle": None, "wide": None, "screw": "position-aware"}  # a field only one has
    assert set(diff) == {"seed", "weights", "scoring"}


def test_summary_is_read_from_the_files_and_rewritten_after_a_rerun(tmp_path):
    write_json(tmp_path / "anomaly_bottle.json", record("bottle", 0.99))
    write_json(tmp_path / "anomaly_screw.json", record("screw", 0.95))
    write_summary(tmp_path, {"command": "anomaly.py --category all"},
                  failed=[{"category": "grid", "status": "failed", "reason": "no defective test images"}])
    summary = read_json(tmp_path / SUMMARY_NAME)
    rows = {r["category"]: r for r in summary["categories"]}
    assert rows["screw"]["image_auroc"] == 0.95 and rows["screw"]["baseline_image_auroc"] == pytest.approx(0.85)
    assert rows["grid"]["status"] == "failed" and summary["mean"]["categories"] == 2
    assert summary["mean"]["image_auroc"] == pytest.approx(0.97)
    assert summary["same_settings"] and summary["config"]["seed"] == 0
    assert stale_rows(summary, tmp_path) == []

    write_json(tmp_path / "anomaly_screw.json", record("screw", 0.90, seed=1))  # screw re-run alone
    assert stale_rows(summary, tmp_path) == ["screw"]
    write_summary(tmp_path, {"command": "anomaly.py --category screw"}, failed_rows(tmp_path))
    summary = read_json(tmp_path / SUMMARY_NAME)
    assert stale_rows(summary, tmp_path) == []
    assert {r["category"]: r.get("image_auroc") for r in summary["categories"]} == {
        "bottle": 0.99, "grid": None, "screw": 0.90}
    assert not summary["same_settings"] and summary["config_differences"] == {"seed": {"bottle": 0, "screw": 1}}
    assert "seed" not in summary["config"] and summary["config"]["arch"] == "mobilenet_v2"


def test_a_failed_category_replaces_its_older_file_in_the_summary(tmp_path):
    write_json(tmp_path / "anomaly_bottle.json", record("bottle", 0.99))
    summary = build_summary(tmp_path, failed=[{"category": "bottle", "status": "failed", "reason": "x"}])
    assert [r["status"] for r in summary["categories"]] == ["failed"]
    assert summary["mean"]["categories"] == 0 and summary["mean"]["image_auroc"] is None
