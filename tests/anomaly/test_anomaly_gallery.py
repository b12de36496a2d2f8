"""inspectkit.anomaly.gallery: the page counts false alarms and misses right, draws outline and heat map, needs
nothing from outside, and, in real headless Chromium, shows every item, sorts and filters, and screenshots."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image, ImageStat

from inspectkit.anomaly.gallery import (
    THUMB_PIXELS,
    GalleryItem,
    find_chromium,
    render_panels,
    rendered_dom,
    screenshot,
    write_gallery,
)
from inspectkit.errors import UserError

THRESHOLD = 0.5
# (label, score): the outcome each must get at THRESHOLD; a score equal to the threshold is called defect
CASES = [
    ("good", 0.10, "correct"), ("good", 0.70, "false-alarm"), ("good", 0.20, "correct"), ("good", 0.50, "false-alarm"),
    ("scratch", 0.90, "correct"), ("scratch", 0.30, "miss"), ("scratch", 0.50, "correct"),
    ("hole", 0.80, "correct"), ("hole", 0.49, "miss"), ("hole", 0.60, "correct"),
]


def _items(height: int = 48, width: int = 64) -> list[GalleryItem]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    items = []
    for i, (label, score, _) in enumerate(CASES):
        image = np.clip(rng.normal(120, 30, (height, width, 3)), 0, 255).astype(np.uint8)
        amap = score * np.exp(-((yy - height / 2) ** 2 + (xx - width / 2) ** 2) / 200)
        mask = None
        if label != "good" and i != 6:  # one defective image without a mask
            mask = ((abs(yy - height / 2) < 6) & (abs(xx - width / 2) < 8)).astype(np.uint8) * 255
        items.append(GalleryItem(f"test/{label}/{i:03d}.png", label, score, image, amap, mask))
    return items


class _Page(HTMLParser):
    """The thumbnails (their attributes, in document order), the text of elements with an id, and the options."""

    def __init__(self, text: str):
        super().__init__()
        self.thumbs: list[dict[str, str | None]] = []
        self.by_id: dict[str, str] = {}
        self.options: dict[str, list[str]] = {}
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self._open: list[str | None] = []
        self._select: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "thumb" in (attrs.get("class") or "").split():
            self.thumbs.append(attrs)
        if tag == "select":
            self._select = attrs.get("id")
            self.options[self._select] = []
        if tag == "option":
            self.options[self._select].append(attrs["value"])
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag not in ("img", "br", "meta", "link", "input"):
            self._open.append(attrs.get("id"))
            if attrs.get("id"):
                self.by_id[attrs["id"]] = ""

    def handle_endtag(self, tag):
        if tag not in ("img", "br", "meta", "link", "input") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in self._open:
            if element_id:
                self.by_id[element_id] += data


def _write(tmp_path, items=None, **kwargs):
    options = {"category": "demo", "items": _items() if items is None else items, "threshold": THRESHOLD,
               "threshold_note": "F1-optimal on the test set", "vmin": 0.0, "vmax": 1.0, **kwargs}
    return write_gallery(tmp_path / "gallery.html", **options)


def _decode(src: str) -> Image.Image:
    assert src.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def test_summary_and_thumbnails_count_false_alarms_and_misses(tmp_path):
    page = _Page(_write(tmp_path).read_text(encoding="utf-8"))
    assert page.by_id["n-items"] == str(len(CASES))
    assert page.by_id["false-alarms"] == "2"
    assert page.by_id["misses"] == "2"
    assert page.by_id["threshold"] == "0.5"
    assert "F1-optimal on the test set" in page.by_id["summary"]
    assert [t["data-outcome"] for t in page.thumbs] == [expected for *_, expected in CASES]
    assert [t["data-verdict"] for t in page.thumbs] == ["defect" if s >= THRESHOLD else "good" for _, s, _ in CASES]
    assert [t["data-class"] for t in page.thumbs] == [label for label, *_ in CASES]
    assert [float(t["data-score"]) for t in page.thumbs] == [s for _, s, _ in CASES]
    errors = [t for t in page.thumbs if t["data-outcome"] != "correct"]
    assert all(t["data-outcome"] in t["class"].split() for t in errors)  # the class that colours them


def test_page_needs_nothing_from_outside_and_has_its_controls(tmp_path):
    text = _write(tmp_path).read_text(encoding="utf-8")
    page = _Page(text)
    assert len(page.srcs) == 2 * len(CASES)
    assert all(src.startswith("data:image/") for src in page.srcs)
    assert page.hrefs == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(|@import", text)
    assert "<script src" not in text
    assert page.options["sort"] == ["file", "score-desc", "score-asc"]
    assert page.options["filter"] == ["all", "class:good", "class:hole", "class:scratch", "errors", "false-alarm",
                                      "miss"]


def test_thumbnails_are_small_with_outline_and_heat_on_one_colour_scale():
    black = np.zeros((400, 300, 3), np.uint8)
    amap = np.zeros((400, 300), np.float32)
    amap[:, 150:] = 2.0  # right half: vmax; left half: vmin
    mask = np.zeros((400, 300), bool)
    mask[100:300, 50:250] = True
    plain, overlay = render_panels(GalleryItem("x.png", "hole", 1.0, black, amap, mask), vmin=0.0, vmax=2.0)
    assert plain.size == overlay.size == (round(300 * THUMB_PIXELS / 400), THUMB_PIXELS)
    pixels = np.asarray(plain)
    scale = THUMB_PIXELS / 400
    top, left = round(100 * scale), round(150 * scale)  # the outline's top edge, halfway along
    assert pixels[top - 1:top + 2, left].max() == 255
    assert pixels[round(200 * scale), round(150 * scale)].max() == 0  # inside the defect: not drawn on
    heat = np.asarray(overlay).astype(int)
    low, high = heat[10, 10], heat[10, -10]  # outside the outline
    np.testing.assert_allclose(low, [0, 0, 64], atol=2)  # half of jet at vmin, dark blue, over black
    np.testing.assert_allclose(high, [64, 0, 0], atol=2)  # half of jet at vmax, dark red


def test_text_is_escaped(tmp_path):
    items = _items()
    items[0].file = 'test/good/<img src=x onerror="alert(1)">.png'
    items[4].label = "a<b&c"
    path = _write(tmp_path, items, category="<script>alert(2)</script>", title_note="<i>", threshold_note="x<y")
    text = path.read_text(encoding="utf-8")
    assert "<img src=x" not in text and "<script>alert" not in text and "<i>" not in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert _Page(text).thumbs[4]["data-class"] == "a<b&c"  # the attribute reads back as the label


@pytest.mark.parametrize("where", ["parent_is_file", "path_is_folder"])
def test_unwritable_path_raises_user_error_and_leaves_no_file(tmp_path, where):
    if where == "parent_is_file":
        (tmp_path / "blocker").write_text("x")
        target = tmp_path / "blocker" / "gallery.html"
    else:
        target = tmp_path / "gallery.html"
        target.mkdir()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="cannot write"):
        write_gallery(target, category="demo", items=_items(), threshold=THRESHOLD, threshold_note="",
                      vmin=0.0, vmax=1.0)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_full_category_at_input_size_stays_small(tmp_path):
    """83 test images at 320 px, like bottle: a few hundred KB of thumbnails, not the 900 px originals."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:320, 0:320]
    smooth = (128 + 60 * np.sin(xx / 20)[..., None] * np.cos(yy / 30)[..., None]).repeat(3, axis=2)
    items = [GalleryItem(f"test/c/{i:03d}.png", "good" if i < 20 else "c", float(i), np.clip(
        smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8), rng.random((320, 320)),
        None if i < 20 else (np.hypot(yy - 160, xx - 160) < 30)) for i in range(83)]
    path = _write(tmp_path, items, threshold=40.0)
    assert path.stat().st_size < 3_000_000


def test_missing_chromium_fails_loudly_with_the_install_hint(tmp_path):
    with pytest.raises(UserError, match="apt-get install -y chromium"):
        find_chromium("/nonexistent/chromium")
    with pytest.raises(UserError, match="apt-get"):
        screenshot(_write(tmp_path), tmp_path / "shot.png", chromium="no-such-chromium-binary")
    assert not (tmp_path / "shot.png").exists()


# In real headless Chromium. Not skipped when it is missing: .ci/run installs it, and find_chromium says how.

def test_browser_shows_every_thumbnail_in_file_order(tmp_path):
    page = _Page(rendered_dom(_write(tmp_path)))
    assert len(page.thumbs) == len(CASES)
    assert [int(t["data-index"]) for t in page.thumbs] == list(range(len(CASES)))
    assert not any("hidden" in t for t in page.thumbs)
    assert page.by_id["shown"] == str(len(CASES))


def test_browser_sorts_and_filters_as_the_url_says(tmp_path):
    path = _write(tmp_path)
    ranked = _Page(rendered_dom(path, fragment="sort=score-desc")).thumbs
    scores = [float(t["data-score"]) for t in ranked]
    assert scores[0] == max(s for _, s, _ in CASES)
    assert scores == sorted(scores, reverse=True)
    ascending = [float(t["data-score"]) for t in _Page(rendered_dom(path, fragment="sort=score-asc")).thumbs]
    assert ascending == sorted(scores)

    dom = rendered_dom(path, fragment="filter=errors")
    page = _Page(dom)
    visible = [t["data-file"] for t in page.thumbs if "hidden" not in t]
    assert visible == [f"test/{label}/{i:03d}.png" for i, (label, _, result) in enumerate(CASES) if result != "correct"]
    assert page.by_id["shown"] == "4"
    assert re.search(r'<p id="empty" hidden', dom)  # the "no image matches" note stays hidden

    holes = _Page(rendered_dom(path, fragment="sort=score-desc&filter=class:hole")).thumbs
    assert [(t["data-class"], float(t["data-score"])) for t in holes if "hidden" not in t] == [
        ("hole", 0.80), ("hole", 0.60), ("hole", 0.49)]


def test_screenshot_has_the_requested_size_and_shows_something(tmp_path):
    png = screenshot(_write(tmp_path), tmp_path / "shots" / "gallery.png", width=900, height=700)
    assert png == tmp_path / "shots" / "gallery.png"
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == (900, 700)
        assert max(ImageStat.Stat(image.convert("RGB")).var) > 100
