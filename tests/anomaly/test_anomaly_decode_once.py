"""anomaly.py on a category it has never seen decodes each image and mask once: the data check stores what it
decoded at the detector's input shape, and the detector reads those entries."""

from __future__ import annotations

from collections import Counter

from helpers import count_decodes

import anomaly
from inspectkit.cli import run
from inspectkit.results import read_json
from inspectkit.synthetic import make_category


def test_a_cold_run_decodes_each_file_once(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path / "cache"))
    make_category(tmp_path / "data", "wide", width=96, height=48, n_train=6, n_test_good=2, n_per_defect=2, seed=3)
    counts = count_decodes(monkeypatch)
    run(anomaly.main, anomaly.get_args_parser(),
        ["--data-root", str(tmp_path / "data"), "--category", "wide", "--arch", "mobilenet_v2", "--weights", "none",
         "--image-size", "96", "--coreset-ratio", "0.1", "--no-baseline", "--out", str(tmp_path / "out")])
    files = list((tmp_path / "data/wide").rglob("*.png"))
    assert len(files) > 10 and counts == Counter({p: 1 for p in files})
    record = read_json(tmp_path / "out/anomaly_wide.json")
    assert record["config"]["input_shape"] == [64, 128]  # the aspect ratio is kept
