"""Anomaly-detection figures: a strip of test images with heat maps and ground-truth outlines, and the histogram of
image scores, good against defective."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import plt, save_figure


def heatmap_strip(images: list[np.ndarray], maps: list[np.ndarray], masks: list[np.ndarray | None],
                  titles: list[str], path: str | os.PathLike, vmin: float, vmax: float,
                  threshold: float | None = None) -> Path:
    """One column per image: the image on top, the same image with its anomaly map overlaid below, and the
    ground truth outlined in white. ``vmin``/``vmax`` fix one colour scale for every map."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for col, (image, amap, mask, title) in enumerate(zip(images, maps, masks, titles, strict=True)):
        axes[0, col].imshow(image)
        axes[0, col].set_title(title.replace("_", " "), fontsize=8)  # class names as words
        axes[1, col].imshow(image)
        shown = axes[1, col].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
        if mask is not None and mask.any():
            axes[1, col].contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel("anomaly map\n(white: ground truth)", fontsize=8)
    bar = fig.colorbar(shown, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01)
    bar.set_label("patch distance", fontsize=7)
    if threshold is not None:
        bar.ax.axhline(threshold, color="black", linewidth=1)
    return save_figure(fig, path)


def score_histogram(scores: np.ndarray, is_defect: np.ndarray, path: str | os.PathLike, title: str,
                    threshold: float | None = None) -> Path:
    """Histograms of image scores for good and defective test images, with the good-only threshold."""
    scores = np.asarray(scores, dtype=float)
    is_defect = np.asarray(is_defect, dtype=bool)
    bins = np.linspace(scores.min(), scores.max(), 31)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(scores[~is_defect], bins=bins, alpha=0.6, label=f"good ({(~is_defect).sum()})", color="tab:green")
    ax.hist(scores[is_defect], bins=bins, alpha=0.6, label=f"defect ({is_defect.sum()})", color="tab:red")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1,
                   label=f"threshold {threshold:.2f}\n(from held-out good images)")
    ax.set_xlabel("image score (max of the smoothed patch scores)")
    ax.set_ylabel("test images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
