"""The README's generated block: the results from the same context as the PDF, and every file in the results
folder with what it holds and the script that made it."""

from __future__ import annotations

import re

import pytest
from report_results import make_results

import build_report
from inspectkit.errors import UserError
from inspectkit.report import README_END, README_START, results_files
from inspectkit.report.readme import describe_file
from inspectkit.results import REPO_ROOT, read_json, write_json


def _build(results, *extra):
    build_report.main(build_report.get_args_parser().parse_args(["--results", str(results), "--pdf", *extra]))


def test_readme_block_is_replaced_from_the_json(tmp_path):
    folder = make_results(tmp_path / "results", seed=9)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{README_START}\nold numbers\n{README_END}\nrest\n")
    _build(folder, "--readme", str(readme))
    text = readme.read_text()
    assert "old numbers" not in text and text.endswith(f"{README_END}\nrest\n")
    f1 = read_json(folder / "attempt_4.json")["test"]["macro_f1"]
    assert f"{f1['mean']:.3f} ± {f1['std']:.3f}" in text
    for path in folder.rglob("*"):  # every file, the report and its provenance too
        if path.is_file():
            assert f"| `{path.relative_to(folder).as_posix()}` |" in text, path
    readme.write_text("# no markers\n")
    with pytest.raises(UserError, match="results:start"):
        _build(folder, "--readme", str(readme))


def test_each_file_says_what_it_holds_and_who_made_it(tmp_path):
    folder = make_results(tmp_path, seed=1)
    write_json(folder / "anomaly_screw.json", {**read_json(folder / "anomaly_bottle.json"), "category": "screw",
                                               "provenance": {"command": "anomaly.py --category screw"}})
    write_json(folder / "anomaly_bench.json", {"provenance": {"command": "anomaly_bench.py --categories a"}})
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "attempt_1_split_0.pt").write_bytes(b"x")  # never committed: not listed
    rows = {r["file"]: r for r in results_files(folder)}
    assert rows["anomaly_screw.json"]["what"].startswith("Q4: the detector on screw")
    assert rows["anomaly_screw.json"]["made_by"] == "anomaly.py"
    assert rows["anomaly_bench.json"]["made_by"] == "bench/anomaly_bench.py"
    assert rows["figures/stats_bottle_counts.png"] == {"file": "figures/stats_bottle_counts.png",
                                                       "what": "Q1 figure: images per class and split",
                                                       "made_by": "stats.py"}
    assert not any(f.startswith("checkpoints/") for f in rows)
    assert describe_file("screw/attempt_2.json")[0].startswith("Q2, Q3: attempt 2's settings")


def test_every_committed_result_file_is_described():
    """A new kind of result file needs a line in readme.FILE_KINDS, or the README's table has a gap."""
    undescribed = [r["file"] for r in results_files(REPO_ROOT / "results") if not r["what"] or not r["made_by"]]
    assert undescribed == []


def test_the_readme_lists_every_committed_result_file():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(README_START):readme.index(README_END)]
    listed = set(re.findall(r"^\| `([^`]+)` \|", block, re.M))
    on_disk = {r["file"] for r in results_files(REPO_ROOT / "results")} - {"report.html"}
    assert on_disk <= listed, sorted(on_disk - listed)
