"""Matplotlib figures, one module per result family (stats, training, anomaly, export); here, the shared style."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window

import matplotlib.pyplot as plt

from ..results import atomic_write

DPI = 150


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG through ``results.atomic_write``, then close it."""
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
