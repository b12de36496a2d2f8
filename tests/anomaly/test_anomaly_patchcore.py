"""inspectkit.anomaly.patchcore (with maps and baseline): the detector separates synthetic defects, localises them,
and a saved detector scores identically after loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit.anomaly import GaussianBaseline, PatchCore, PatchCoreConfig
from inspectkit.anomaly.maps import anomaly_maps, image_scores
from inspectkit.anomaly.metrics import image_auroc, pixel_auroc
from inspectkit.cache import DecodeCache
from inspectkit.data import load_category
from inspectkit.errors import UserError

SIZE = 128  # the 64 px synthetic images, upsampled: a 16x16 patch grid


@pytest.fixture(scope="module")
def synthetic(synthetic_root):
    category = load_category(synthetic_root, "demo", progress=False)
    cache = DecodeCache(disk=False)

    def stack(samples):
        return torch.stack([cache.image_tensor(s.path, SIZE) for s in samples])

    test = category.split_samples("test")
    masks = np.stack([cache.mask(s.mask_path, SIZE) for s in test])
    return stack(category.split_samples("train")), stack(test), np.array([s.is_defect for s in test]), masks


@pytest.fixture(scope="module")
def fitted(synthetic):
    train, *_ = synthetic
    config = PatchCoreConfig(arch="mobilenet_v2", image_size=SIZE, coreset_ratio=0.25)
    return PatchCore.build(config, "none").fit(train, progress=False)


def test_detector_separates_and_localises_synthetic_defects(synthetic, fitted):
    _, test, is_defect, masks = synthetic
    scores, maps = fitted.score(test, progress=False)
    assert maps.shape == (len(test), SIZE, SIZE)
    patch_scores = fitted.patch_scores(fitted.extract(test))
    assert np.allclose(scores, image_scores(patch_scores, fitted.config.score_sigma))  # from the grid, not the map
    assert image_auroc(is_defect, scores) > 0.9
    assert pixel_auroc(masks, maps) > 0.9
    n_fit = 12 - round(fitted.config.validation_share * 12)  # the held-out share sets the thresholds
    assert len(fitted.bank) == round(0.25 * n_fit * 16 * 16)


def test_save_and_load_give_identical_scores(synthetic, fitted, tmp_path):
    _, test, *_ = synthetic
    path = fitted.save(tmp_path / "detectors" / "d.pt")
    loaded = PatchCore.load(path)
    before, before_maps = fitted.score(test, progress=False)
    after, after_maps = loaded.score(test, progress=False)
    assert np.array_equal(before, after) and np.array_equal(before_maps, after_maps)
    assert loaded.config == fitted.config and fitted.image_threshold is not None
    assert (loaded.image_threshold, loaded.pixel_threshold, loaded.score_center) == \
        (fitted.image_threshold, fitted.pixel_threshold, fitted.score_center)


def test_load_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        PatchCore.load(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("not a detector")
    with pytest.raises(UserError, match="cannot read"):
        PatchCore.load(tmp_path / "text.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an inspectkit"):
        PatchCore.load(tmp_path / "other.pt")


def test_maps_upsample_and_blur():
    patch_scores = torch.zeros(1, 8, 8)
    patch_scores[0, 4, 4] = 1.0
    maps = anomaly_maps(patch_scores, 64, sigma=4.0)
    sharp = anomaly_maps(patch_scores, 64, sigma=0.0)
    assert maps.shape == (1, 64, 64)
    assert maps.sum() == pytest.approx(sharp.sum(), rel=1e-3)  # blurring keeps the mass (the peak is far from edges)
    assert maps.max() < sharp.max()  # and spreads it


def test_image_score_is_the_max_of_the_smoothed_grid_and_ignores_the_map_sigma():
    patch_scores = torch.zeros(2, 8, 8)
    patch_scores[0, 4, 4] = 1.0  # one isolated high patch
    patch_scores[1, 3:6, 3:6] = 0.6  # a lower, but spread, region: what a defect looks like
    assert np.allclose(image_scores(patch_scores, sigma=0), [1.0, 0.6])
    smoothed = image_scores(patch_scores, sigma=1.0)
    assert smoothed[1] > smoothed[0]  # smoothing ranks the spread region above the lone spike
    config = PatchCoreConfig(arch="mobilenet_v2", sigma=0.0)
    assert config.score_sigma == 1.0  # the map's sigma is a separate setting


def test_gaussian_baseline_flags_synthetic_defects(synthetic, fitted):
    train, test, is_defect, _ = synthetic
    baseline = GaussianBaseline(SIZE).fit(fitted.extract(train, progress=False))
    scores, maps = baseline.score_features(fitted.extract(test, progress=False))
    assert maps.shape == (len(test), SIZE, SIZE)
    assert image_auroc(is_defect, scores) > 0.7


def _narrow_bank(state):
    state["bank"] = state["bank"][:, :-5].clone()


def _double_bank(state):
    state["bank"] = state["bank"].double()


def _nan_in_bank(state):
    state["bank"] = state["bank"].clone()
    state["bank"][0, 0] = float("nan")


def _half_backbone_tensor(state):
    key = next(iter(state["extractor"]))
    state["extractor"] = {**state["extractor"], key: state["extractor"][key].half()}


def _cut_backbone_tensor(state):
    key = next(iter(state["extractor"]))
    state["extractor"] = {**state["extractor"], key: state["extractor"][key][:-1].clone()}


def _other_layers(state):
    state["config"] = {**state["config"], "layers": ["features.3", "features.6"]}  # a shorter backbone


@pytest.mark.parametrize(("damage", "says"), [
    (_narrow_bank, "memory bank is float32"),
    (_double_bank, "memory bank is float64"),
    (_nan_in_bank, "memory bank holds NaN"),
    (_half_backbone_tensor, "is float16"),
    (_cut_backbone_tensor, "backbone tensor"),
    (_other_layers, "backbone tensors do not match mobilenet_v2 features.3,features.6"),
    (lambda state: state["config"].update(image_size="320"), "config image_size is str"),
    (lambda state: state["config"].update(arch="resnet_nonsense"), "config cannot be built: Unknown model"),
    (lambda state: state["config"].update(coreset_ratio=5.0), "its config cannot be used: --coreset-ratio must be"),
    (lambda state: state.update(input_shape=[100, 128]), "not a multiple of the stride"),
    (lambda state: state.update(image_threshold=float("nan")), "not a finite number"),
])
def test_a_detector_file_whose_parts_disagree_is_refused_at_load(fitted, tmp_path, damage, says):
    state = fitted.state()
    state["config"] = dict(state["config"])
    damage(state)
    path = tmp_path / "d.pt"
    torch.save(state, path)
    with pytest.raises(UserError, match="is damaged") as exc:
        PatchCore.load(path)
    assert says in str(exc.value) and "\n" not in str(exc.value)
