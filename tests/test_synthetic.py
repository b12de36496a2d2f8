"""Synthetic data: deterministic by seed, MVTec layout, and masks that mark exactly the changed pixels."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from inspectkit.synthetic import _DRAW, DEFECT_TYPES, _good_image, demo_root, make_category


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = {"image_size": 48, "n_train": 3, "n_test_good": 2, "n_per_defect": 2}
    a = _digest(make_category(tmp_path / "a", seed=7, **kwargs))
    b = _digest(make_category(tmp_path / "b", seed=7, **kwargs))
    c = _digest(make_category(tmp_path / "c", seed=8, **kwargs))
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert len(a) == 3 + 2 + 2 * len(DEFECT_TYPES) * 2  # images plus one mask per defect image


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_is_exactly_the_changed_pixels(defect):
    image, body = _good_image(np.random.default_rng(3), 96)
    before = image.copy()
    mask = _DRAW[defect](np.random.default_rng(4), image, body)
    changed = np.any(image != before, axis=-1)
    assert mask.any()
    assert np.array_equal(changed, mask)
    assert not (mask & ~body).any()  # defects stay on the object


def test_defect_types_look_different():
    rng = np.random.default_rng(0)
    mean_colours = {}
    for defect in DEFECT_TYPES:
        image, body = _good_image(rng, 96)
        mask = _DRAW[defect](rng, image, body)
        mean_colours[defect] = image[mask].mean(axis=0)
    assert mean_colours["stain"][1] > mean_colours["stain"][0]  # greenish
    assert mean_colours["scratch"].max() < 0.3  # dark
    assert not np.allclose(mean_colours["hole"], mean_colours["scratch"], atol=0.05)


def test_demo_root_is_generated_once(tmp_path):
    root = demo_root(tmp_path / "demo", image_size=32, n_train=2, n_test_good=1, n_per_defect=1)
    first = _digest(root / "demo")
    stamp = (root / "demo/train/good/000.png").stat().st_mtime_ns
    assert demo_root(tmp_path / "demo", image_size=32, n_train=2, n_test_good=1, n_per_defect=1) == root
    assert (root / "demo/train/good/000.png").stat().st_mtime_ns == stamp
    assert _digest(root / "demo") == first
