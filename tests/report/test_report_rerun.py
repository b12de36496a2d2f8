"""The rerun sequence on synthetic data: anomaly.py --category all, then one category again alone with another
seed. The summary follows the newest per-category file, and the report of the other category shows that
category's newest numbers and no false claim of the same settings."""

from __future__ import annotations

import re
import shutil

import pytest
from report_results import make_results

import anomaly
import build_report
from inspectkit.anomaly_results import SUMMARY_NAME, stale_rows
from inspectkit.cli import run
from inspectkit.results import read_json
from inspectkit.synthetic import make_category

FAST = ["--arch", "mobilenet_v2", "--weights", "none", "--image-size", "96", "--coreset-ratio", "0.1",
        "--no-figures", "--no-baseline"]
METRICS = ("image_auroc", "pixel_auroc", "pro")


def _anomaly(*argv):
    run(anomaly.main, anomaly.get_args_parser(), [str(a) for a in argv])


def _row(html: str, category: str) -> str:
    """The Q4 table row of one category, as text."""
    body = html[html.index('<table class="data anomaly">'):]
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if cells and cells[0] == category:
            return " ".join(cells)
    raise AssertionError(f"no Q4 row for {category}")


@pytest.fixture(scope="module")
def rerun(synthetic_root, tmp_path_factory):
    """(results folder, wide's record after --category all, wide's record after its re-run alone)."""
    base = tmp_path_factory.mktemp("rerun")
    root = base / "data"
    shutil.copytree(synthetic_root / "demo", root / "demo")
    make_category(root, "wide", width=128, height=64, n_train=10, n_test_good=3, n_per_defect=3, seed=2)
    results = make_results(base / "results", seed=21, category="demo")  # the other sections of demo's report
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSPECTKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        _anomaly("--category", "all", "--data-root", root, *FAST, "--out", results)
        first = read_json(results / "anomaly_wide.json")
        _anomaly("--category", "wide", "--data-root", root, *FAST, "--seed", "1", "--out", results)
    return results, first, read_json(results / "anomaly_wide.json")


def test_the_rerun_changed_wide_s_numbers(rerun):
    """Without a change the test below could not tell old numbers from new ones."""
    _, first, newest = rerun
    assert newest["config"]["seed"] == 1 and first["config"]["seed"] == 0
    assert any(f"{first['metrics'][m]:.3f}" != f"{newest['metrics'][m]:.3f}" for m in METRICS)


def test_the_summary_follows_the_newest_file(rerun):
    results, _, newest = rerun
    summary = read_json(results / SUMMARY_NAME)
    rows = {r["category"]: r for r in summary["categories"]}
    assert {m: rows["wide"][m] for m in METRICS} == {m: newest["metrics"][m] for m in METRICS}
    assert stale_rows(summary, results) == []
    assert not summary["same_settings"] and summary["config_differences"]["seed"] == {"demo": 0, "wide": 1}


def test_the_other_category_s_report_shows_the_newest_numbers_and_no_false_same_settings(rerun, capsys):
    results, first, newest = rerun
    run(build_report.main, build_report.get_args_parser(), ["--results", str(results), "--html", "--pdf",
                                                            "--category", "demo"])
    html = (results / "report.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).replace("\u00a0", " ").split())
    row = _row(html, "wide")
    for m in METRICS:
        assert f"{newest['metrics'][m]:.3f}" in row, m
        if f"{first['metrics'][m]:.3f}" != f"{newest['metrics'][m]:.3f}":
            assert f"{first['metrics'][m]:.3f}" not in row, m
    assert "same settings" not in text
    assert "the rows differ in seed (demo 0, wide 1)" in text
    demo = read_json(results / "anomaly_demo.json")
    assert f"{demo['metrics']['image_auroc']:.3f}" in _row(html, "demo")
