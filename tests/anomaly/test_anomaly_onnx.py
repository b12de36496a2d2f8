"""inspectkit.anomaly.onnx_export: the exported graph scores like the torch detector (onnxruntime), for square,
non-square and tiny inputs and any batch size; it takes uint8, carries the memory bank and its metadata, and an
unwritable destination is refused before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from scipy import ndimage

from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.maps import blur_matrix, upsample_matrix
from inspectkit.anomaly.onnx_export import (
    INPUT_NAME,
    MAP_OUTPUT,
    SCORE_OUTPUT,
    ScoringGraph,
    check_parity,
    export_onnx,
    run_session,
)
from inspectkit.errors import UserError
from inspectkit.onnxrt import make_session


def fitted(shape: tuple[int, int], n_train: int = 6, seed: int = 0, **config) -> PatchCore:
    """A small detector on random-init weights, fitted on seeded random images of ``shape`` (height, width)."""
    generator = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (n_train, 3, *shape), dtype=torch.uint8, generator=generator)
    return PatchCore.build(PatchCoreConfig(image_size=max(shape), coreset_ratio=0.25, **config), "none").fit(train)


def random_images(shape: tuple[int, int], n: int = 3, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *shape), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    detector = fitted((64, 64))
    return detector, export_onnx(detector, tmp_path_factory.mktemp("square") / "detector.onnx")


@pytest.mark.parametrize("shape, n_train, config", [((64, 64), 6, {}), ((48, 80), 6, {"sigma": 8.0}),
                                                     ((48, 80), 40, {}), ((48, 80), 6, {"whiten": 0.0})],
                         ids=["square", "non-square", "position-aware", "unwhitened"])
def test_onnxruntime_scores_like_the_torch_detector(shape, n_train, config, tmp_path):
    detector = fitted(shape, n_train, **config)
    assert detector.scorer.whitened == (detector.config.whiten > 0)  # the default whitens; the graph carries it
    # 40 training images hold out 4 good ones: enough to learn the position statistics, which the graph carries
    assert detector.position["applied"] == (n_train == 40)
    path = export_onnx(detector, tmp_path / "detector.onnx")
    images = random_images(shape)
    parity = check_parity(detector, path, images)
    assert parity["image_scores_pass"] and parity["maps_pass"], parity
    assert parity["images"] == 3

    torch_scores, torch_maps = detector.score(images)
    ort_scores, ort_maps = run_session(make_session(path), images, batch_size=2)  # a batch of 2, then one of 1
    assert ort_maps.shape == (3, *shape) and ort_maps.dtype == np.float32
    np.testing.assert_allclose(ort_scores, torch_scores, rtol=1e-4)
    np.testing.assert_allclose(ort_maps, torch_maps, rtol=0, atol=1e-3 * float(np.abs(torch_maps).max()))
    assert np.ptp(torch_scores) > 0 and np.ptp(torch_maps[0]) > 0  # real outputs, not constants that agree
    assert os.listdir(tmp_path) == ["detector.onnx"]  # no temporary file left beside it


def test_parity_flags_fail_for_a_model_of_another_detector(square, tmp_path):
    detector, _ = square
    other = fitted((64, 64), seed=5)
    parity = check_parity(detector, export_onnx(other, tmp_path / "other.onnx"), random_images((64, 64)))
    assert not parity["image_scores_pass"] and not parity["maps_pass"]


def test_graph_takes_uint8_and_names_its_outputs(square):
    _, path = square
    model = onnx.load(path)
    (image_input,) = model.graph.input
    assert image_input.name == INPUT_NAME
    assert image_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in image_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert list(outputs) == [MAP_OUTPUT, SCORE_OUTPUT]
    assert all(t.elem_type == onnx.TensorProto.FLOAT for t in outputs.values())
    assert len(outputs[MAP_OUTPUT].shape.dim) == 3 and len(outputs[SCORE_OUTPUT].shape.dim) == 1


def test_model_holds_the_memory_bank_and_the_detector_settings(square):
    detector, path = square
    model = onnx.load(path)
    bank = detector.bank.numpy()
    stored = [numpy_helper.to_array(t) for t in model.graph.initializer if tuple(t.dims) == bank.shape]
    assert any(np.array_equal(s, bank) for s in stored)
    assert path.stat().st_size > bank.nbytes
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["input_shape"]) == [64, 64]
    assert PatchCoreConfig(**{**json.loads(props["config"])}) == detector.config
    assert detector.image_threshold is not None  # fit holds out good images and calibrates
    assert float(props["image_threshold"]) == detector.image_threshold
    assert float(props["pixel_threshold"]) == detector.pixel_threshold
    assert props["format"] == "inspectkit-patchcore-onnx" and props["format_version"] == "2"


def test_blur_and_upsample_matrices_reproduce_scipy_and_torch_even_below_the_kernel_radius():
    rng = np.random.default_rng(0)
    grid = rng.random((3, 5)).astype(np.float32)  # sigma 2 -> radius 8, wider than both sides
    expected = ndimage.gaussian_filter(grid, sigma=2.0, truncate=4.0, mode="mirror")
    np.testing.assert_allclose(blur_matrix(3, 2.0) @ grid @ blur_matrix(5, 2.0).T, expected, rtol=1e-5)
    assert np.array_equal(blur_matrix(4, 0.0), np.eye(4))
    upsampled = F.interpolate(torch.from_numpy(grid)[None, None], size=(24, 40), mode="bilinear",
                              align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(upsample_matrix(3, 24) @ grid @ upsample_matrix(5, 40).T, upsampled, atol=1e-6)


def test_tiny_input_smaller_than_the_blur_radius_is_scored_like_torch():
    detector = fitted((24, 40), sigma=8.0)  # map radius 32 > 24 px; grid 3 x 5 < score radius 4
    images = random_images((24, 40))
    scores, maps = detector.score(images)
    with torch.no_grad():
        graph_maps, graph_scores = ScoringGraph(detector).eval()(images)
    np.testing.assert_allclose(graph_scores.numpy(), scores, rtol=1e-4)
    np.testing.assert_allclose(graph_maps.numpy(), maps, rtol=0, atol=1e-3 * float(np.abs(maps).max()))


def test_unwritable_destinations_raise_user_error_and_write_nothing(square, tmp_path):
    detector, _ = square
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    for destination in (tmp_path / "a_file" / "detector.onnx", tmp_path / "a_folder"):
        with pytest.raises(UserError) as raised:
            export_onnx(detector, destination)
        assert "\n" not in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "a_folder"]
    assert os.listdir(tmp_path / "a_folder") == [] and (tmp_path / "a_file").read_text() == "x"


@contextmanager
def without_root() -> Iterator[None]:
    """File permissions apply inside the block: root ignores them, so as root the effective uid is ``nobody``'s
    for the block (the saved uid stays 0 and is restored after)."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(65534)
    except OSError:
        pytest.skip("running as root and cannot switch the effective uid: chmod cannot deny anything here")
    try:
        yield
    finally:
        os.seteuid(0)


def test_read_only_folder_raises_user_error_before_exporting(square):
    detector, _ = square
    base = Path(tempfile.mkdtemp(prefix="onnx-read-only-"))  # outside pytest's root-only tmp folders
    locked = base / "locked"
    try:
        base.chmod(0o755)
        locked.mkdir()
        locked.chmod(0o555)
        with without_root(), pytest.raises(UserError, match="cannot write to the ONNX model's folder") as raised:
            export_onnx(detector, locked / "detector.onnx")
        assert "\n" not in str(raised.value)
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)
