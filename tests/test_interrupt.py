"""Ctrl-C in each phase of a real train.py run: exit 130 with one line, no result (or temporary file) for the
interrupted work, completed work kept, and the next run works."""

from __future__ import annotations

import json

import pytest
from helpers import interrupt_on_call, run_script

import train
from inspectkit import cache as cache_module
from inspectkit import training


def _argv(root, out):
    return ["--attempt", "2", "--category", "demo", "--data-root", str(root), "--image-size", "32", "--epochs", "1",
            "--splits", "2", "--arch", "mobilenet_v2", "--weights", "none", "--out", str(out)]


def _leftovers(*folders):
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("phase", ["decoding", "training"])
def test_an_interrupted_run_keeps_completed_work_and_the_next_run_works(phase, synthetic_root, tmp_path,
                                                                        monkeypatch, capsys):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("INSPECTKIT_CACHE", str(cache_dir))
    out = tmp_path / "results"
    if phase == "decoding":
        monkeypatch.setattr(cache_module, "_decode_resized", interrupt_on_call(5, cache_module._decode_resized))
    else:  # the second split's first epoch: split 0 is done and checkpointed
        monkeypatch.setattr(training, "train_one_epoch", interrupt_on_call(2, training.train_one_epoch))
    code, _, err = run_script(train, _argv(synthetic_root, out), capsys)
    assert code == 130 and err.strip().splitlines()[-1].endswith(": interrupted") and "Traceback" not in err
    assert not (out / "attempt_2.json").exists() and _leftovers(out, cache_dir) == []
    checkpoints = sorted(p.name for p in (out / "checkpoints").rglob("*.pt")) if (out / "checkpoints").exists() else []
    assert checkpoints == (["split_0.pt"] if phase == "training" else [])
    decoded = list((cache_dir / "decoded").glob("*.npy"))
    assert len(decoded) == (4 if phase == "decoding" else 28)  # every finished decode kept, the interrupted one not

    monkeypatch.undo()
    monkeypatch.setenv("INSPECTKIT_CACHE", str(cache_dir))
    code, _, err = run_script(train, _argv(synthetic_root, out), capsys)
    assert code == 0, err
    assert len(json.loads((out / "attempt_2.json").read_text())["splits"]) == 2
    assert _leftovers(out, cache_dir) == []
