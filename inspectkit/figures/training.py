"""Figures of the classification attempts: confusion matrix, learning curves, and a gallery of misclassified images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

from . import plt, save_figure


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str,
                            path: str | os.PathLike) -> Path:
    """Counts summed over splits, rows = true class, columns = predicted class."""
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(class_names)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=30)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def learning_curves_figure(splits: Sequence[dict], title: str, path: str | os.PathLike) -> Path:
    """Train and validation loss, and validation macro-F1, per epoch; one line per split."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = plt.cm.tab10.colors
    for k, split in enumerate(splits):
        curves, colour = split["curves"], colours[k % len(colours)]
        epochs = np.arange(1, len(curves["train_loss"]) + 1)
        ax_loss.plot(epochs, curves["train_loss"], color=colour, label=f"split {k} train")
        ax_loss.plot(epochs, curves["val_loss"], color=colour, linestyle="--", label=f"split {k} val")
        ax_f1.plot(epochs, curves["val_macro_f1"], color=colour, marker=".", label=f"split {k}")
        ax_f1.axvline(split["best_epoch"] + 1, color=colour, alpha=0.3, linewidth=1)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (solid: train, dashed: validation)")
    ax_f1.set(xlabel="epoch", ylabel="validation macro-F1", title="validation macro-F1 (faint line: kept epoch)",
              ylim=(0, 1.02))
    ax_f1.legend(fontsize=7, loc="lower right")
    for ax in (ax_loss, ax_f1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def misclassified_gallery(images: Sequence[np.ndarray], captions: Sequence[str], title: str,
                          path: str | os.PathLike, columns: int = 6) -> Path:
    """A grid of images (HxWx3 uint8) with a caption each; a note instead when nothing was misclassified."""
    if not images:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        return save_figure(fig, path)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
