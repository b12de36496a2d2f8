"""Matplotlib figures, one module per result family (stats, training, anomaly, export); here, the shared style, and
saving: text in figures comes from class folder and file names, so it is always drawn as it is written (no
mathtext, so ``$`` in a name is a dollar sign, not a formula that fails to parse) and in its visible form (a name
that is not UTF-8 as ``\\xNN``, which the font renderer cannot take otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window

import matplotlib.pyplot as plt
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter, FuncFormatter

from ..names import visible_text
from ..results import atomic_write

matplotlib.rcParams["text.parse_math"] = False  # labels are names (folders, files), never formulas

DPI = 150


def _visible_texts(fig: plt.Figure) -> None:
    """Every text of ``fig`` in its visible form: titles, labels and legends, and tick labels still to be drawn."""
    for text in fig.findobj(Text):
        if (shown := visible_text(text.get_text())) != text.get_text():
            text.set_text(shown)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for formatter in (axis.get_major_formatter(), axis.get_minor_formatter()):
                if isinstance(formatter, FixedFormatter):  # tick labels given as a list of names
                    formatter.seq = [visible_text(str(label)) for label in formatter.seq]
                elif isinstance(formatter, FuncFormatter):  # the same, as newer matplotlib keeps them
                    formatter.func = lambda x, pos=None, named=formatter.func: visible_text(str(named(x, pos)))


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG through ``results.atomic_write``, then close it."""
    try:
        _visible_texts(fig)
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
