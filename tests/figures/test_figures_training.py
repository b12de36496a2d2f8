"""inspectkit.figures.training: the confusion matrix (larger with more classes), the learning curves, and the
gallery of misclassified images (a row per six images, a note when there are none), each a PNG that matplotlib
reads back."""

from __future__ import annotations

import numpy as np
from figure_checks import is_red, read_png

from inspectkit.figures.training import confusion_matrix_figure, learning_curves_figure, misclassified_gallery


def test_the_confusion_matrix_grows_with_the_classes(tmp_path):
    small = read_png(confusion_matrix_figure(np.eye(3, dtype=int) * 5, ["good", "hole", "scratch"], "3 classes",
                                             tmp_path / "small.png"))
    names = ["good", "hole", "scratch", "stain", "crack", "bent"]
    large = read_png(confusion_matrix_figure(np.eye(6, dtype=int) * 5, names, "6 classes", tmp_path / "large.png"))
    assert large.shape[0] > 1.4 * small.shape[0] and large.shape[1] > 1.4 * small.shape[1]


def test_learning_curves_draw_one_wide_figure_for_any_number_of_splits(tmp_path):
    curves = {"train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7], "val_macro_f1": [0.3, 0.6, 0.7]}
    splits = [{"curves": curves, "best_epoch": 2}, {"curves": curves, "best_epoch": 1}]
    png = read_png(learning_curves_figure(splits, "attempt 1", tmp_path / "curves.png"))
    height, width = png.shape[:2]
    assert 1200 < width < 1700 and 400 < height < 700  # 10 x 3.6 inches at 150 dpi, trimmed


def test_the_gallery_has_a_row_per_six_images_and_a_note_when_empty(tmp_path):
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    one_row = read_png(misclassified_gallery([red] * 6, ["hole as good"] * 6, "errors", tmp_path / "one.png"))
    two_rows = read_png(misclassified_gallery([red] * 7, ["hole as good"] * 7, "errors", tmp_path / "two.png"))
    assert 1.7 < two_rows.shape[0] / one_row.shape[0] < 2.3
    assert is_red(one_row).mean() > 0.2  # the images themselves
    empty = read_png(misclassified_gallery([], [], "errors", tmp_path / "none.png"))
    assert empty.shape[0] < one_row.shape[0] and not is_red(empty).any()
