"""What the figure tests read back: the PNG as matplotlib decodes it, and which of its pixels are red."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def read_png(path: Path) -> np.ndarray:
    """The image (height, width, RGBA floats in 0..1), after checking the file is a PNG, as the report needs."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def is_red(image: np.ndarray, loose: bool = False) -> np.ndarray:
    """Pixels that are pure red (or, ``loose``, clearly more red than green and blue)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    if loose:
        return (r > 0.6) & (g < 0.5) & (b < 0.5)
    return (r > 0.95) & (g < 0.05) & (b < 0.05)
