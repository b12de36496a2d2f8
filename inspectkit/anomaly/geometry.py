"""The input geometry of a category: one (height, width) for every image, keeping the images' aspect ratio.

``image_size`` is the side of the square of the same area, so a 1130x460 category is not squashed into a square
but read as 512x192 at 320: the same number of patches, the same compute, the object's true shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# Both sides are multiples of this, so every backbone stage (strides up to 32) tiles the image exactly.
SIDE_MULTIPLE = 32


def input_shape(sizes: Iterable[tuple[int, int]], image_size: int, multiple: int = SIDE_MULTIPLE) -> tuple[int, int]:
    """``(height, width)`` for images of ``(width, height)`` ``sizes``: the median aspect ratio at the area of an
    ``image_size`` square, each side rounded to ``multiple``. Images of another aspect ratio than the median (a
    category of mixed sizes) are resized to it: a mild stretch rather than a second geometry."""
    aspects = sorted(width / height for width, height in sizes)
    if not aspects:
        raise ValueError("no image sizes to choose a geometry from")
    aspect = aspects[len(aspects) // 2]
    height = max(multiple, round(image_size / math.sqrt(aspect) / multiple) * multiple)
    width = max(multiple, round(image_size * math.sqrt(aspect) / multiple) * multiple)
    return height, width
