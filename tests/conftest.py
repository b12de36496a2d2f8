"""Shared fixtures: a small synthetic category in MVTec layout, and an isolated cache folder."""

from __future__ import annotations

import pytest

from inspectkit.synthetic import make_category


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the decode cache and demo data of every test out of the user's home folder."""
    monkeypatch.setenv("INSPECTKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("MVTEC_ROOT", raising=False)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Data root holding one small synthetic category 'demo' (64 px; 12 train, 4 good + 3x4 defect test).

    Session-scoped and shared: tests must not modify it (copy it first, see ``editable_root``).
    """
    root = tmp_path_factory.mktemp("synthetic")
    make_category(root, "demo", image_size=64, n_train=12, n_test_good=4, n_per_defect=4, seed=0)
    return root


@pytest.fixture
def editable_root(synthetic_root, tmp_path):
    """A private copy of the synthetic data root, for tests that break files on purpose."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(synthetic_root, copy)
    return copy
