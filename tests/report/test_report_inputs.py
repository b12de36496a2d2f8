"""Finding the report's inputs: the category, the files of it, every category's detector result, and the attempts
of other categories in sub-folders."""

from __future__ import annotations

import pytest
from report_results import make_results

from inspectkit.errors import UserError
from inspectkit.report import collect_inputs, find_category
from inspectkit.results import read_json, write_json


def test_category_is_found_or_asked_for(tmp_path):
    make_results(tmp_path, seed=7)
    assert find_category(tmp_path, None) == "bottle"
    make_results(tmp_path, seed=7, category="hazelnut")
    with pytest.raises(UserError, match="several categories"):
        find_category(tmp_path, None)
    with pytest.raises(UserError, match="does not exist"):
        collect_inputs(tmp_path / "nope")


def test_every_category_file_is_read_and_the_own_one_is_the_file_checked(tmp_path):
    folder = make_results(tmp_path, seed=2)
    screw = {**read_json(folder / "anomaly_bottle.json"), "category": "screw"}
    write_json(folder / "anomaly_screw.json", screw)
    write_json(folder / "anomaly_onnx_screw.json", {"category": "screw", "metrics": {}, "config": {}})  # a bench
    inputs = collect_inputs(folder)
    assert sorted(inputs.detectors) == ["bottle", "screw"]
    assert inputs.detectors["bottle"] is inputs.found["anomaly"]
    assert not inputs.missing


def test_other_categories_attempts_need_all_four_files_of_one_category(tmp_path):
    folder = make_results(tmp_path / "results", seed=3)
    other = make_results(tmp_path / "screw_run", seed=4, category="screw")
    (folder / "screw").mkdir()
    for n in (1, 2, 3, 4):
        write_json(folder / "screw" / f"attempt_{n}.json", {**read_json(other / f"attempt_{n}.json"),
                                                             "category": "screw"})
    (folder / "half").mkdir()
    write_json(folder / "half" / "attempt_1.json", {**read_json(other / "attempt_1.json"), "category": "grid"})
    inputs = collect_inputs(folder)
    assert [name for name, _ in inputs.other_attempts] == ["screw"]
    assert [r["attempt"] for r in inputs.other_attempts[0][1]] == [1, 2, 3, 4]
