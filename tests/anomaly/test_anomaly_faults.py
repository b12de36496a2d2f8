"""anomaly.py under faults: Ctrl-C while decoding and while worker threads extract features, in onnxruntime or in
torch (exit 130, nothing written for the interrupted run, the next run works), and damaged detector files (exit 2
naming the file and the command that makes it again)."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from helpers import interrupt_on_call, run_script

import anomaly
from inspectkit import filecheck
from inspectkit.anomaly import features as features_module
from inspectkit.cli import run

FAST = ["--category", "demo", "--arch", "mobilenet_v2", "--weights", "none", "--image-size", "64",
        "--coreset-ratio", "0.1", "--batch-size", "4", "--no-figures"]


@pytest.mark.parametrize("phase", ["decoding", "features-onnxruntime", "features-torch"])
def test_an_interrupted_run_writes_nothing_and_the_next_run_works(phase, synthetic_root, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    runtime = "torch" if phase == "features-torch" else "onnxruntime"
    argv = ["--data-root", str(synthetic_root), *FAST, "--runtime", runtime, "--out", str(out)]
    if phase == "decoding":
        # a cold run decodes each file once, in the data check, which stores it at the detector's input shape
        monkeypatch.setattr(filecheck, "open_image", interrupt_on_call(5, filecheck.open_image))
    elif runtime == "onnxruntime":  # raised inside a worker thread's session run, in the second batch of the fit
        run_session = onnxruntime.InferenceSession.run
        monkeypatch.setattr(onnxruntime.InferenceSession, "run", interrupt_on_call(3, run_session))
    else:  # raised inside a worker thread's forward pass, the third batch of the fit
        forward = features_module.PatchFeatureExtractor.forward
        monkeypatch.setattr(features_module.PatchFeatureExtractor, "forward", interrupt_on_call(3, forward))
    code, _, err = run_script(anomaly, argv, capsys)
    assert code == 130 and err.strip().splitlines()[-1].endswith(": interrupted") and "Traceback" not in err
    written = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".write-check")] \
        if out.exists() else []
    assert written == []  # no results JSON, no detector file, no temporary file
    monkeypatch.undo()
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path / "cache"))
    code, _, err = run_script(anomaly, argv, capsys)
    assert code == 0, err
    assert (out / "anomaly_demo.json").exists() and (out / "detectors" / "anomaly_demo_mobilenet_v2.pt").exists()
    assert not [p for p in out.rglob("*.tmp")]


@pytest.fixture(scope="module")
def detector_file(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fitted")
    run(anomaly.main, anomaly.get_args_parser(),
        ["--data-root", str(synthetic_root), *FAST, "--no-baseline", "--out", str(out)])
    return out / "detectors" / "anomaly_demo_mobilenet_v2.pt"


@pytest.mark.parametrize(("damage", "match"), [
    (lambda state: state.pop("bank"), "no memory bank"),
    (lambda state: state["config"].update(colour="blue"), "unknown config key(s) colour"),
    (lambda state: state.update(input_shape="square"), "no input shape"),
    (lambda state: state.update(version=1), "version 1 detector file"),
    (lambda state: state["position"].update(loc=torch.zeros(2, 2)), "position statistics 'loc'"),
    (lambda state: state["position"].update(spread=torch.ones(8, 8, dtype=torch.int64)),
     "position statistics 'spread'"),
    (lambda state: state["position"]["map_spread"].mul_(-1), "position statistics 'map_spread' are not all positive"),
    (lambda state: state.update(whitening=None), "no whitening, but its config has whiten 0.25"),
    (lambda state: state["whitening"].update(transform=torch.eye(3)), "whitening 'transform' is not a float tensor"),
    (lambda state: state["whitening"]["mean"].fill_(float("nan")), "whitening 'mean' holds NaN"),
])
def test_a_damaged_detector_file_names_itself_and_the_command(damage, match, detector_file, tmp_path, capsys):
    state = torch.load(detector_file, weights_only=True)
    damage(state)
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    images = tmp_path / "images"
    images.mkdir()
    code, _, err = run_script(anomaly, ["--load", str(broken), "--images", str(images), "--out", str(tmp_path)],
                              capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and match in line
    assert str(broken) in line and "python anomaly.py" in line
    assert not list(tmp_path.glob("*.json"))


def test_a_detector_file_from_before_position_aware_scoring_keeps_its_scoring(detector_file, tmp_path):
    """A version-3 file (no position statistics) loads and scores with plain nearest-neighbour distances, the
    scoring it was fitted and calibrated with; never with half the new state."""
    from inspectkit.anomaly import PatchCore

    state = torch.load(detector_file, weights_only=True)
    assert state["version"] == 6 and state["position"] is not None and state["whitening"] is not None
    old = {k: v for k, v in state.items() if k not in ("position", "whitening")}
    old["version"] = 3
    old["config"] = {k: v for k, v in state["config"].items()
                     if k not in ("position_norm", "scale_power", "map_scale_power", "whiten")}
    torch.save(old, tmp_path / "v3.pt")
    detector = PatchCore.load(tmp_path / "v3.pt")
    assert detector.config.position_norm == "none" and detector.position is None
    images = torch.randint(0, 256, (2, 3, *detector.input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    scores, _ = detector.score(images)
    raw = detector.image_scores(detector.patch_scores(detector.extract(images)))
    torch.testing.assert_close(torch.from_numpy(scores), torch.from_numpy(raw))


def test_a_detector_file_from_before_whitening_keeps_its_scoring(detector_file, tmp_path):
    """A version-4 file (position-aware, no whitening) loads and scores its features unwhitened, with its position
    statistics: the scoring it was fitted with."""
    from inspectkit.anomaly import PatchCore

    state = torch.load(detector_file, weights_only=True)
    old = {k: v for k, v in state.items() if k != "whitening"}
    old["version"] = 4
    old["config"] = {k: v for k, v in state["config"].items() if k not in ("whiten", "map_scale_power")}
    old["position"] = {k: v for k, v in state["position"].items() if k != "map_spread"}
    torch.save(old, tmp_path / "v4.pt")
    detector = PatchCore.load(tmp_path / "v4.pt")
    assert detector.config.whiten == 0 and detector.whitening is None and not detector.scorer.whitened
    assert detector.position is not None  # its position record and statistics are kept
    images = torch.randint(0, 256, (2, 3, *detector.input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    features = detector.extract(images)
    queries = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    nearest = torch.cdist(queries, detector.bank).min(dim=1).values.reshape(features.shape[0], *features.shape[2:])
    torch.testing.assert_close(detector.patch_scores(features), nearest, rtol=1e-4, atol=1e-4)
    scores, _ = detector.score(images)
    torch.testing.assert_close(torch.from_numpy(scores),
                               torch.from_numpy(detector.image_scores(detector.scored_grids(nearest))),
                               rtol=1e-4, atol=1e-4)


def test_a_detector_file_from_before_the_maps_own_spread_keeps_its_maps(detector_file, tmp_path):
    """A version-5 file (whitened, one spread for the image score and the map) loads with its map divided by that
    same spread, as it was calibrated; this version's file divides its map by the map's own spread."""
    from inspectkit.anomaly import PatchCore

    state = torch.load(detector_file, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    for name in ("spread", "map_spread"):  # two different spreads, so that the test can fail
        state["position"][name] = torch.rand(state["position"]["loc"].shape, generator=generator) + 0.5
    torch.save(state, tmp_path / "v6.pt")
    old = {**state, "version": 5, "position": {k: v for k, v in state["position"].items() if k != "map_spread"}}
    old["config"] = {k: v for k, v in state["config"].items() if k != "map_scale_power"}
    torch.save(old, tmp_path / "v5.pt")
    images = torch.randint(0, 256, (2, 3, *PatchCore.load(detector_file).input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    for path, spread in ((tmp_path / "v5.pt", "spread"), (tmp_path / "v6.pt", "map_spread")):
        detector = PatchCore.load(path)
        assert detector.whitening is not None and detector.config.whiten == state["config"]["whiten"]
        distances = detector.patch_scores(detector.extract(images))
        expected = detector.maps((distances - state["position"]["loc"]) / state["position"][spread])
        np.testing.assert_allclose(detector.score(images)[1], expected, rtol=1e-4, atol=1e-4)
    assert PatchCore.load(tmp_path / "v5.pt").config.map_scale_power == state["config"]["scale_power"]
