"""Result files: atomic JSON writes, provenance, and the writable-folder check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inspectkit.errors import UserError
from inspectkit.results import ensure_writable_dir, provenance, read_json, write_json


def test_write_json_round_trips_numpy_and_leaves_no_temp_files(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": np.float32(0.5), "b": np.arange(3), "p": tmp_path})
    assert read_json(path) == {"a": 0.5, "b": [0, 1, 2], "p": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(ValueError):
        write_json(path, {"bad": float("nan")})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_provenance_records_how_a_result_was_made():
    record = provenance(seed=3, weights={"spec": "none"}, data_root="x", demo=True, extra_field=1)
    assert record["seed"] == 3 and record["demo_data"] is True and record["extra_field"] == 1
    assert record["weights"] == {"spec": "none"} and record["data_root"] == "x"
    assert record["git_commit"] and record["time_utc"].endswith("+00:00")
    assert set(record["versions"]) == {"python", "torch", "torchvision", "numpy"}


def test_unwritable_out_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write to --out"):
        ensure_writable_dir(tmp_path / "file" / "results")
    assert ensure_writable_dir(tmp_path / "new") == tmp_path / "new"
