"""Files and folders the user cannot read, for real: listed and skipped (or refused in one line), never an
uncaught PermissionError, and read again once they are readable. Root ignores chmod, so as root the script runs
with the capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) dropped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _unprivileged() -> list[str]:
    """The command prefix that makes chmod bite, or a skip where this machine cannot do that."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: chmod cannot deny anything here")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def _stats(prefix, data, out, cache):
    env = {**os.environ, "INSPECTKIT_CACHE": str(cache)}
    env.pop("MVTEC_ROOT", None)
    return subprocess.run([*prefix, sys.executable, str(REPO / "stats.py"), "--category", "demo", "--data-root",
                           str(data), "--out", str(out), "--no-figures"], cwd=out.parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_unreadable_files_and_folders_are_listed_then_read_once_readable(editable_root, tmp_path):
    prefix = _unprivileged()
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    if subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"],
                      capture_output=True).returncode == 0:
        pytest.skip("chmod 000 does not deny reading on this machine")
    image = editable_root / "demo/train/good/003.png"
    folder = editable_root / "demo/test/scratch"
    cache = tmp_path / "cache"
    try:
        image.chmod(0)
        folder.chmod(0)
        run = _stats(prefix, editable_root, tmp_path / "r1", cache)
    finally:
        image.chmod(0o644)
        folder.chmod(0o755)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "PermissionError" not in run.stderr
    data = json.loads((tmp_path / "r1" / "stats_demo.json").read_text())
    problems = {p["file"]: p["problem"] for p in data["problems"]}
    assert "Permission denied" in problems["train/good/003.png"]
    assert "cannot read folder (Permission denied)" in problems["test/scratch"]
    assert data["counts"]["train"]["good"] == 11 and "scratch" not in data["defect_classes"]

    run = _stats(prefix, editable_root, tmp_path / "r2", cache)  # readable again: same size and mtime as before
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "r2" / "stats_demo.json").read_text())
    assert data["problems"] == [] and data["counts"]["train"]["good"] == 12 and "scratch" in data["defect_classes"]


def test_an_unreadable_train_good_folder_is_one_line(editable_root, tmp_path):
    prefix = _unprivileged()
    folder = editable_root / "demo/train/good"
    try:
        folder.chmod(0)
        run = _stats(prefix, editable_root, tmp_path / "r", tmp_path / "cache")
    finally:
        folder.chmod(0o755)
    if run.returncode == 0:
        pytest.skip("chmod 000 does not deny reading on this machine")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert f"cannot read {folder} (Permission denied)" in run.stderr
