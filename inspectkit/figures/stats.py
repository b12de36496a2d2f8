"""Figures for dataset statistics: images per class and split, and one sample per class with its mask outlined."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries

from ..cache import DecodeCache
from ..data import Category
from . import save_figure


def counts_bar_chart(stats: dict, path: str | os.PathLike) -> Path:
    """Grouped bars: images per class in train and test."""
    classes = stats["class_names"]
    train = [stats["counts"]["train"].get(c, 0) for c in classes]
    test = [stats["counts"]["test"].get(c, 0) for c in classes]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(4.2, 2.2))
    bars_train = ax.bar(x - 0.2, train, 0.4, label="train", color="#4c72b0")
    bars_test = ax.bar(x + 0.2, test, 0.4, label="test", color="#dd8452")
    ax.bar_label(bars_train, fontsize=7, padding=1)
    ax.bar_label(bars_test, fontsize=7, padding=1)
    ax.set_xticks(x, [c.replace("_", "\n") for c in classes], fontsize=7)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{stats['category']}: images per class", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.15)
    return save_figure(fig, path)


def samples_grid(category: Category, path: str | os.PathLike, size: int = 256) -> Path:
    """One test image per class (the first), with the ground-truth mask outlined in red."""
    cache = DecodeCache()
    picks = []
    for cls in category.class_names:
        candidates = [s for s in category.samples if s.label == cls and (s.split == "test" or cls == "good")]
        with_mask = [s for s in candidates if s.mask_path is not None]
        if candidates:
            picks.append((with_mask or candidates)[0])
    fig, axes = plt.subplots(1, len(picks), figsize=(1.6 * len(picks), 1.8), squeeze=False)
    for ax, sample in zip(axes[0], picks, strict=True):
        image = cache.image(sample.path, size).copy()
        if sample.mask_path is not None:
            edge = find_boundaries(cache.mask(sample.mask_path, size), mode="thick")
            image[edge] = (255, 0, 0)
        ax.imshow(image)
        ax.set_title(sample.label, fontsize=7)
        ax.axis("off")
    return save_figure(fig, path)
