"""inspectkit.figures.anomaly: the heat-map strip (one column per image, the images drawn) and the score histogram,
each a PNG that matplotlib reads back, of the size its layout asks for."""

from __future__ import annotations

import numpy as np
from figure_checks import is_red, read_png

from inspectkit.figures.anomaly import heatmap_strip, score_histogram


def _strip(tmp_path, n: int, name: str):
    red = np.zeros((48, 48, 3), dtype=np.uint8)
    red[..., 0] = 255
    amap = np.linspace(0, 1, 48 * 48).reshape(48, 48)
    mask = np.zeros((48, 48), dtype=bool)
    mask[10:20, 10:20] = True
    return heatmap_strip([red] * n, [amap] * n, [mask] + [None] * (n - 1), [f"image {i}" for i in range(n)],
                         tmp_path / name, vmin=0.0, vmax=1.0, threshold=0.7)


def test_heatmap_strip_has_a_column_per_image_and_draws_the_images(tmp_path):
    two, four = read_png(_strip(tmp_path, 2, "two.png")), read_png(_strip(tmp_path, 4, "four.png"))
    assert abs(two.shape[0] - four.shape[0]) < 0.05 * two.shape[0]  # the same two rows
    assert 1.5 < four.shape[1] / two.shape[1] < 2.1  # twice the columns; the labels and colour bar are shared
    assert is_red(four).mean() > 0.15  # the red test images, shown as they are in the top row


def test_score_histogram_is_a_small_figure_with_both_classes(tmp_path):
    scores = np.r_[np.linspace(0, 1, 20), np.linspace(2, 3, 10)]
    png = read_png(score_histogram(scores, np.r_[np.zeros(20), np.ones(10)], tmp_path / "hist.png", "demo", 1.5))
    height, width = png.shape[:2]
    assert 500 < width < 900 and 300 < height < 550  # 5 x 3 inches at 150 dpi, trimmed to what is drawn
    assert is_red(png, loose=True).any()  # the defect bars (tab:red)
