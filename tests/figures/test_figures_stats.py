"""inspectkit.figures.stats: the bar chart of images per class and split, and the grid of one sample per class
with its mask outlined in red, each a PNG that matplotlib reads back, as wide as its classes ask for."""

from __future__ import annotations

import numpy as np
from figure_checks import is_red, read_png

from inspectkit.data import load_category
from inspectkit.figures.stats import counts_bar_chart, samples_grid


def _stats(classes: list[str]) -> dict:
    return {"category": "demo", "class_names": classes,
            "counts": {"train": {"good": 12}, "test": {c: 4 for c in classes}}}


def test_counts_bar_chart_is_a_small_figure(tmp_path):
    png = read_png(counts_bar_chart(_stats(["good", "hole", "scratch", "stain"]), tmp_path / "counts.png"))
    height, width = png.shape[:2]
    assert 450 < width < 800 and 250 < height < 450  # 4.2 x 2.2 inches at 150 dpi, trimmed to what is drawn


def test_samples_grid_shows_one_panel_per_class_with_the_masks_outlined(synthetic_root, tmp_path):
    category = load_category(synthetic_root, "demo", progress=False)
    png = read_png(samples_grid(category, tmp_path / "samples.png", size=64))
    height, width = png.shape[:2]
    panels = len(category.class_names)  # good, hole, scratch, stain
    assert 0.8 * 1.6 * 150 * panels < width < 1.1 * 1.6 * 150 * panels
    assert height < width / 2
    assert np.count_nonzero(is_red(png)) > 50  # the outlines of the three defect masks
