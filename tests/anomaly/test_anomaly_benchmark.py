"""inspectkit.anomaly.benchmark (and the rows it takes from inspectkit.anomaly_results): the summary's rows, its
mean row (over the categories that ran, each metric over the categories that have it) and failed rows, the printed
table, and the data-root checks of --category all."""

from __future__ import annotations

import pytest

from inspectkit.anomaly.benchmark import benchmark, find_categories, format_row, format_table
from inspectkit.anomaly.config import PatchCoreConfig
from inspectkit.anomaly_results import mean_row, summary_row
from inspectkit.errors import UserError


def _record(name: str, image: float, pixel: float | None, baseline_image: float, seconds: float) -> dict:
    """A category's results record, as run_detection returns it, with only the fields the summary reads."""
    return {"category": name, "metrics": {"image_auroc": image, "pixel_auroc": pixel, "pro": pixel},
            "baseline": {"image_auroc": baseline_image, "pixel_auroc": pixel, "pro": None},
            "timings": {"total_s": seconds}, "peak_rss_mb": 100.0 * seconds,
            "config": {"input_shape": [96, 192]}, "counts": {"test": {"good": 4, "hole": 3}}}


def _rows() -> list[dict]:
    return [summary_row(_record("bottle", 0.9, 0.8, 0.7, 2.0)),
            summary_row(_record("screw", 0.7, None, 0.5, 4.0)),
            {"category": "broken", "status": "failed", "reason": "no defective test images"}]


def test_a_row_takes_ours_and_the_baselines_metrics_from_the_record():
    row = _rows()[0]
    assert row["status"] == "ok" and row["file"] == "anomaly_bottle.json"
    assert (row["image_auroc"], row["baseline_image_auroc"], row["pixel_auroc"]) == (0.9, 0.7, 0.8)
    assert row["test_images"] == 7 and row["input_shape"] == [96, 192] and row["peak_rss_mb"] == 200.0


def test_the_mean_row_skips_failed_categories_and_missing_metrics():
    mean = mean_row(_rows())
    assert mean["categories"] == 2 and mean["failed"] == 1
    assert mean["image_auroc"] == pytest.approx(0.8) and mean["baseline_image_auroc"] == pytest.approx(0.6)
    assert mean["pixel_auroc"] == pytest.approx(0.8)  # screw has no masks: the mean of bottle alone, not (0.8+0)/2
    assert mean["baseline_pro"] is None  # no category has it
    assert mean["seconds"] == pytest.approx(3.0) and mean["peak_rss_mb"] == pytest.approx(300.0)


def test_the_table_shows_failed_rows_with_their_reason_and_the_mean_of_those_that_ran():
    rows = _rows()
    table = format_table({"categories": rows, "mean": mean_row(rows)})
    lines = table.splitlines()
    assert lines[-1].startswith("mean of 2") and "0.800 / 0.600" in lines[-1]
    assert "broken           failed: no defective test images" in table
    assert "n/a" in format_row(rows[1])  # screw's pixel AUROC
    failed_only = [rows[2]]
    assert "mean of" not in format_table({"categories": failed_only, "mean": mean_row(failed_only)})


def test_category_all_needs_a_folder_of_category_folders(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        benchmark(tmp_path / "missing", PatchCoreConfig(), "none", out=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no category folders"):
        find_categories(tmp_path / "empty")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_categories_are_the_folders_with_train_or_test(synthetic_root):
    assert find_categories(synthetic_root) == ["demo"]
