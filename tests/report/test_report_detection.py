"""Q4 from the per-category detector files: any number of categories, optional fields missing, the comparison
at the precision the table shows, the settings check, and the method worded from the record."""

from __future__ import annotations

import numpy as np
from report_results import _provenance, anomaly_record

from inspectkit.report.detection import (
    anomaly_context,
    compare_with_baseline,
    comparison_words,
    differences_in_words,
    method,
)


def _records(**extra):
    rng = np.random.default_rng(0)
    return {c: anomaly_record(c, rng, _provenance(False)) for c in ("bottle", "screw", *extra)}


def test_a_tie_at_three_decimals_is_equal_not_higher():
    compared = compare_with_baseline({"image_auroc": 1.0, "pixel_auroc": 0.98628, "pro": 0.9577},
                                     {"image_auroc": 1.0, "pixel_auroc": 0.98587, "pro": 0.9479})
    assert compared == {"higher": ["PRO"], "equal": ["image AUROC", "pixel AUROC"], "lower": []}
    assert compare_with_baseline({"image_auroc": 0.9, "pixel_auroc": None, "pro": None}, None) == {
        "higher": [], "equal": [], "lower": []}
    assert comparison_words(compared) == ["higher than the Gaussian baseline on PRO", "equal on the rest"]
    assert comparison_words({"higher": ["PRO"], "equal": [], "lower": ["image AUROC"]}) == [
        "higher than the Gaussian baseline on PRO", "lower on image AUROC"]
    assert comparison_words({"higher": [], "equal": ["PRO"], "lower": []}) == [
        "equal to the Gaussian baseline on PRO"]


def test_every_category_with_a_file_gets_a_row_and_a_new_one_needs_no_optional_fields():
    records = _records()
    # a category of another dataset, written by a later detector version: no baseline, no masks, no threshold
    records["kolektorsdd"] = {"category": "kolektorsdd", "config": {"arch": "mobilenet_v2", "seed": 0},
                              "metrics": {"image_auroc": 0.91, "pixel_auroc": None, "pro": None}}
    q4 = anomaly_context("screw", records, demo=False, figure=None)
    assert [r["category"] for r in q4["rows"]] == ["screw", "bottle", "kolektorsdd"]  # the report's own first
    assert q4["rows"][2]["baseline"] is None and q4["rows"][2]["test_images"] is None
    assert q4["others"] == ["bottle", "kolektorsdd"]
    assert not q4["same_settings"]  # kolektorsdd lacks settings the others have: not the same, and said so
    assert q4["published"] is None  # no published anchor stored for screw


def test_same_settings_is_checked_and_each_difference_named():
    records = _records()
    assert anomaly_context("bottle", records, demo=False, figure=None)["same_settings"]
    rng = np.random.default_rng(1)
    records["screw"] = anomaly_record("screw", rng, _provenance(False), seed=1, image_size=320)
    q4 = anomaly_context("bottle", records, demo=False, figure=None)
    assert not q4["same_settings"]
    assert q4["differences"] == ["input size (bottle 224, screw 320)", "seed (bottle 0, screw 1)"]
    assert differences_in_words({"weights": {"a": "ab" * 32, "b": "cd" * 32, "c": "ab" * 32}}) == [
        "weights (a, c vs b)"]


def test_the_method_is_described_from_the_record():
    record = anomaly_record("bottle", np.random.default_rng(0), _provenance(False))
    described = method(record)
    assert described["model"] == "MobileNetV2" and described["depths"] == 2 and described["stride"] == 8
    assert described["scoring"].startswith("the highest patch distance, after smoothing")
    record["position"] = {"applied": True}  # a position-aware fit says so
    assert "relative to the held-out good images' distances at that place" in method(record)["scoring"]
    record["position"] = {"applied": False}
    assert method(record)["scoring"].startswith("the highest patch distance, after smoothing")
    record["config"]["whiten"] = 0.25  # a whitened fit says so
    assert method(record)["scoring"].startswith("the highest whitened patch distance, after smoothing")
    record["config"]["whiten"] = 0.0
    record["scoring"] = {"description": "the highest distance after removing each position's typical score"}
    record["border"] = "Border patches are scored against border patches only"
    described = method(record)
    assert described["scoring"] == "the highest distance after removing each position's typical score"
    assert described["border"] == "Border patches are scored against border patches only"
