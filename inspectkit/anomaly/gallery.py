"""A static, self-contained HTML gallery of one category's scored test images (image, heat map, ground-truth
outline, score, verdict at a threshold; sort and filter in inline JavaScript), and headless Chromium to render
it: the DOM after its scripts ran, and a screenshot."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data import GOOD
from ..errors import UserError
from ..results import atomic_write

THUMB_PIXELS = 180  # long side of each thumbnail panel
JPEG_QUALITY = 80
COLORMAP = "jet"  # as in figures.anomaly.heatmap_strip
HEAT_ALPHA = 0.5
OUTLINE_RGB = (255, 255, 255)
DEFECT, FALSE_ALARM, MISS, CORRECT = "defect", "false-alarm", "miss", "correct"

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
CHROMIUM_HINT = ("install it (Debian/Ubuntu, as root): apt-get update && apt-get install -y chromium; or pass the "
                 "browser's path as chromium=")


@dataclass
class GalleryItem:
    """One scored test image. ``image`` (H, W, 3) uint8 and ``anomaly_map`` (H, W) float are at the detector's input
    shape; ``mask`` (H, W) is the ground truth, nonzero = defect, None where there is none."""

    file: str  # relative to the category, e.g. "test/broken_large/000.png"
    label: str  # its class folder; GOOD is the defect-free class
    score: float
    image: np.ndarray
    anomaly_map: np.ndarray
    mask: np.ndarray | None = None


def verdict(score: float, threshold: float) -> str:
    """The detector's call at ``threshold``: "defect" when ``score >= threshold``, else "good"."""
    return DEFECT if score >= threshold else GOOD


def outcome(label: str, called: str) -> str:
    """"false-alarm" (a good image called defect), "miss" (a defective one called good) or "correct"."""
    if (label == GOOD) == (called == GOOD):
        return CORRECT
    return FALSE_ALARM if label == GOOD else MISS


def _thumb_size(height: int, width: int) -> tuple[int, int]:
    scale = THUMB_PIXELS / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _outline(draw: ImageDraw.ImageDraw, mask: np.ndarray, scale_xy: tuple[float, float]) -> None:
    """Draw the contour of ``mask`` (found at its own resolution, so thin defects keep their outline) scaled by
    ``scale_xy`` onto ``draw``."""
    from skimage.measure import find_contours

    padded = np.pad(mask != 0, 1).astype(np.float32)  # closes contours that touch the border
    for contour in find_contours(padded, 0.5):
        points = [((c - 0.5) * scale_xy[0], (r - 0.5) * scale_xy[1]) for r, c in contour]
        if len(points) > 1:
            draw.line(points, fill=OUTLINE_RGB, width=1)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_panels(item: GalleryItem, vmin: float, vmax: float) -> tuple[Image.Image, Image.Image]:
    """The item's two thumbnail panels, ``THUMB_PIXELS`` on the long side: the image, and the image under its heat
    map (colour scale ``vmin``..``vmax``); both with the ground truth outlined."""
    from matplotlib import colormaps

    image = np.asarray(item.image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    height, width = image.shape[:2]
    size = _thumb_size(height, width)
    plain = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8)).resize(size, Image.BILINEAR)
    heat = Image.fromarray(np.asarray(item.anomaly_map, dtype=np.float32)).resize(size, Image.BILINEAR)
    level = np.clip((np.asarray(heat) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    colour = colormaps[COLORMAP](level)[..., :3] * 255
    blended = (1 - HEAT_ALPHA) * np.asarray(plain, dtype=np.float32) + HEAT_ALPHA * colour
    overlay = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    if item.mask is not None and np.any(item.mask):
        mask = np.asarray(item.mask)
        scale_xy = (size[0] / mask.shape[1], size[1] / mask.shape[0])
        for panel in (plain, overlay):
            _outline(ImageDraw.Draw(panel), mask, scale_xy)
    return plain, overlay


def _colour_scale_css(steps: int = 11) -> str:
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]
    stops = []
    for i in range(steps):
        r, g, b, _ = cmap(i / (steps - 1))
        stops.append(f"rgb({round(r * 255)},{round(g * 255)},{round(b * 255)}) {100 * i / (steps - 1):.0f}%")
    return "linear-gradient(to right, " + ", ".join(stops) + ")"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 6px}
.summary{margin:0 0 8px}
.controls{display:flex;gap:16px;align-items:center;flex-wrap:wrap;margin:8px 0 12px}
.scale{display:inline-flex;align-items:center;gap:6px}
.scale .bar{display:inline-block;width:140px;height:10px;border:1px solid #999;background:%(gradient)s}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.thumb{margin:0;padding:6px;background:#fff;border:3px solid #cfd8cf;border-radius:6px}
.thumb.false-alarm{border-color:#e08a00;background:#fff4e0}
.thumb.miss{border-color:#d11;background:#ffe8e8}
.thumb[hidden]{display:none}
.panels{display:flex;gap:4px}
.panels img{display:block}
figcaption{font-size:12px;max-width:%(caption)dpx;margin-top:4px;word-break:break-all}
.score{font-weight:600}
.badge{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;font-weight:700;color:#fff}
.badge.correct{background:#5a8f5a}.badge.false-alarm{background:#e08a00}.badge.miss{background:#d11}
"""

_SCRIPT = """
(function () {
  var grid = document.getElementById('grid');
  var thumbs = Array.prototype.slice.call(grid.querySelectorAll('.thumb'));
  var sortBox = document.getElementById('sort'), filterBox = document.getElementById('filter');
  var shown = document.getElementById('shown'), empty = document.getElementById('empty');
  function score(t) { var s = parseFloat(t.dataset.score); return isNaN(s) ? -Infinity : s; }
  function keep(t, f) {
    if (f === 'all') return true;
    if (f === 'errors') return t.dataset.outcome !== 'correct';
    if (f === 'false-alarm' || f === 'miss') return t.dataset.outcome === f;
    return 'class:' + t.dataset.class === f;
  }
  function apply() {
    var order = thumbs.slice(), s = sortBox.value, f = filterBox.value, n = 0;
    order.sort(function (a, b) {
      if (s === 'score-asc') return score(a) - score(b) || a.dataset.index - b.dataset.index;
      if (s === 'score-desc') return score(b) - score(a) || a.dataset.index - b.dataset.index;
      return a.dataset.index - b.dataset.index;
    });
    order.forEach(function (t) { t.hidden = !keep(t, f); if (!t.hidden) n++; grid.appendChild(t); });
    shown.textContent = n;
    empty.hidden = n > 0;
    var hash = 'sort=' + encodeURIComponent(s) + '&filter=' + encodeURIComponent(f);
    if (history.replaceState) history.replaceState(null, '', '#' + hash);
  }
  function choose(box, value) {
    for (var i = 0; i < box.options.length; i++) if (box.options[i].value === value) { box.value = value; }
  }
  // The page opens in the state its URL names, e.g. #sort=score-desc&filter=errors (a link to a view, and the
  // hook the tests drive it with).
  var params = new URLSearchParams(location.hash.replace(/^#/, ''));
  if (params.get('sort')) choose(sortBox, params.get('sort'));
  if (params.get('filter')) choose(filterBox, params.get('filter'));
  sortBox.addEventListener('change', apply);
  filterBox.addEventListener('change', apply);
  apply();
})();
"""


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def gallery_html(*, category: str, items: Sequence[GalleryItem], threshold: float, threshold_note: str,
                 vmin: float, vmax: float, title_note: str = "") -> str:
    """The gallery page as text (see ``write_gallery``)."""
    esc = html.escape
    calls = [verdict(item.score, threshold) for item in items]
    outcomes = [outcome(item.label, called) for item, called in zip(items, calls, strict=True)]
    class_counts = Counter(item.label for item in items)
    classes = sorted(class_counts, key=lambda name: (name != GOOD, name))  # good first, then the defect classes
    n_good = class_counts.get(GOOD, 0)
    n_false_alarms, n_misses = outcomes.count(FALSE_ALARM), outcomes.count(MISS)

    cards = []
    for index, (item, called, result) in enumerate(zip(items, calls, outcomes, strict=True)):
        plain, overlay = render_panels(item, vmin, vmax)
        badge = {CORRECT: "correct", FALSE_ALARM: "FALSE ALARM", MISS: "MISS"}[result]
        mask_note = " · no ground-truth mask" if item.mask is None and item.label != GOOD else ""
        cards.append(
            f'<figure class="thumb {result}" data-index="{index}" data-file="{esc(item.file)}" '
            f'data-score="{float(item.score)!r}" data-class="{esc(item.label)}" data-verdict="{called}" '
            f'data-outcome="{result}" title="{esc(item.file)}">'
            f'<div class="panels"><img src="{_data_uri(plain)}" width="{plain.width}" height="{plain.height}" '
            f'alt="image"><img src="{_data_uri(overlay)}" width="{overlay.width}" height="{overlay.height}" '
            f'alt="heat map"></div>'
            f'<figcaption><span class="score">{_fmt(item.score)}</span> → {called} '
            f'<span class="badge {result}">{badge}</span><br>class {esc(item.label)}{mask_note}<br>'
            f'<span class="file">{esc(item.file)}</span></figcaption></figure>')

    counts = ", ".join(f"{esc(name)} {class_counts[name]}" for name in classes)
    options = "".join(f'<option value="class:{esc(name)}">{esc(name)} ({class_counts[name]})</option>'
                      for name in classes)
    title = f"{category}: scored test images" + (f" ({title_note})" if title_note else "")
    css = _CSS % {"gradient": _colour_scale_css(), "caption": 2 * THUMB_PIXELS + 4}
    summary = (
        f'<p class="summary" id="summary"><span id="n-items">{len(items)}</span> test images ({counts}). '
        f'Threshold <span id="threshold">{_fmt(threshold)}</span> ({esc(threshold_note)}): '
        f'score ≥ threshold is called defect. '
        f'<span id="false-alarms">{n_false_alarms}</span> false alarm(s) of {n_good} good, '
        f'<span id="misses">{n_misses}</span> miss(es) of {len(items) - n_good} defective.</p>')
    controls = (
        '<div class="controls">'
        '<label>Sort <select id="sort"><option value="file">file order</option>'
        '<option value="score-desc">score, highest first</option>'
        '<option value="score-asc">score, lowest first</option></select></label>'
        '<label>Show <select id="filter"><option value="all">all classes</option>'
        f'{options}<option value="errors">errors only ({n_false_alarms + n_misses})</option>'
        f'<option value="false-alarm">false alarms ({n_false_alarms})</option>'
        f'<option value="miss">misses ({n_misses})</option></select></label>'
        f'<span>showing <span id="shown">{len(items)}</span> of {len(items)}</span>'
        f'<span class="scale">heat map {_fmt(vmin)} <span class="bar"></span> {_fmt(vmax)}</span>'
        '<span>white outline: ground truth</span></div>')
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>\n'
            f"<body><h1>{esc(title)}</h1>\n{summary}\n{controls}\n"
            '<p id="empty" hidden>No image matches this filter.</p>\n'
            '<div class="grid" id="grid">\n' + "\n".join(cards) + "\n</div>\n"
            f"<script>{_SCRIPT}</script>\n"
            f'<script type="application/json" id="gallery-data">{_summary_json(items, outcomes, threshold)}'
            "</script>\n</body></html>\n")


def _summary_json(items: Sequence[GalleryItem], outcomes: list[str], threshold: float) -> str:
    """The counts as JSON, for a reader that wants numbers rather than text; "<" escaped so it cannot end the tag."""
    data = {"n_items": len(items), "threshold": float(threshold),
            "false_alarms": outcomes.count(FALSE_ALARM), "misses": outcomes.count(MISS)}
    return json.dumps(data).replace("<", "\\u003c")


def write_gallery(path: str | os.PathLike, *, category: str, items: Sequence[GalleryItem], threshold: float,
                  threshold_note: str, vmin: float, vmax: float, title_note: str = "") -> Path:
    """Write the gallery of ``items`` to ``path``: one static HTML file that needs no server and loads nothing
    (styles and script inline, thumbnails as JPEG data URIs), written atomically. Every item is a ``.thumb``
    element with ``data-score``, ``data-class``, ``data-verdict`` ("defect" when score >= ``threshold``, else
    "good") and ``data-outcome`` ("correct", "false-alarm", "miss"). ``vmin``..``vmax`` is the heat maps' colour
    scale. An unwritable path raises ``UnwritablePath`` (a UserError) and leaves no file."""
    text = gallery_html(category=category, items=items, threshold=threshold, threshold_note=threshold_note,
                        vmin=vmin, vmax=vmax, title_note=title_note)
    return atomic_write(path, text)


def find_chromium(chromium: str = "chromium") -> str:
    """The full path of the ``chromium`` executable (a name on PATH or a path); a UserError with the install hint
    when there is none."""
    found = shutil.which(chromium)
    if found is None:
        raise UserError(f"headless Chromium is needed to render the gallery and '{chromium}' was not found; "
                        + CHROMIUM_HINT)
    return found


def _page_url(html_path: str | os.PathLike, fragment: str) -> str:
    page = Path(html_path)
    if not page.is_file():
        raise UserError(f"cannot render {page}: no such file")
    url = page.resolve().as_uri()
    return f"{url}#{fragment.lstrip('#')}" if fragment else url


def _run_chromium(chromium: str, args: list[str], timeout_s: float) -> str:
    """Run headless Chromium with ``CHROMIUM_FLAGS``, a fresh profile and ``args``; its stdout. A browser left
    running past ``timeout_s`` is killed with every process it started."""
    executable = find_chromium(chromium)
    with tempfile.TemporaryDirectory(prefix="inspectkit-chromium-", ignore_cleanup_errors=True) as profile:
        command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                   errors="replace", start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(f"headless Chromium did not finish within {timeout_s:g} s: {' '.join(command)}") \
                from None
        finally:
            with contextlib.suppress(ProcessLookupError):  # helpers (crashpad) may outlive the browser
                os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"headless Chromium failed (exit {process.returncode}): {' '.join(command)}\n{tail}")
    return stdout


def rendered_dom(html_path: str | os.PathLike, *, fragment: str = "", chromium: str = "chromium",
                 budget_ms: int = 5000, timeout_s: float = 120) -> str:
    """Load ``html_path`` (with ``#fragment``, e.g. "sort=score-desc&filter=errors") in headless Chromium and return
    the DOM as serialised after its scripts ran (``--dump-dom``; ``budget_ms`` of virtual time for them)."""
    url = _page_url(html_path, fragment)
    return _run_chromium(chromium, [f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout_s)


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1280, height: int = 900,
               fragment: str = "", chromium: str = "chromium", budget_ms: int = 5000,
               timeout_s: float = 120) -> Path:
    """A ``width`` x ``height`` PNG of ``html_path`` as headless Chromium shows it (the top of the page, after its
    scripts ran; ``fragment`` as in ``rendered_dom``), written atomically to ``png_path``."""
    url = _page_url(html_path, fragment)
    with tempfile.TemporaryDirectory(prefix="inspectkit-shot-") as folder:
        shot = Path(folder) / "shot.png"
        _run_chromium(chromium, [f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
                                 f"--screenshot={shot}", url], timeout_s)
        if not shot.is_file():
            raise RuntimeError(f"headless Chromium wrote no screenshot of {url}")
        return atomic_write(png_path, shot.read_bytes())
