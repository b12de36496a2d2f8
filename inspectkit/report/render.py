"""Rendering the report: the Jinja environment and its number formats (a number never splits from its unit), the
HTML, and the PDF through WeasyPrint, laid out within the page budget: figures are sized so that each sits on the
page where its section runs and no page but the last is left more than MAX_BLANK empty.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..names import visible_text
from ..results import REPO_ROOT
from .sections import SECTION_TITLES
from .words import WORD_TARGETS, word_counts

TEMPLATES_DIR = REPO_ROOT / "templates"
MAX_PAGES = 3
MAX_BLANK = 0.15  # the largest empty share of a page's text area, on every page but the last
AIM_BLANK = 0.12  # what the layout aims at, to keep a margin below MAX_BLANK
STUB_PAGE = 0.08  # a last page filled less than this (a footnote, a few lines) is pulled back when figures can shrink
NBSP = "\u00a0"
MM = 96 / 25.4  # CSS pixels per millimetre
# Each figure's image height in mm: preferred, smallest and largest. Layout moves between them.
FIGURES = {"q1": (48.0, 34.0, 66.0), "q4": (64.0, 36.0, 96.0), "q5": (56.0, 34.0, 80.0)}
SHRINK_STEPS = (1.0, 0.85, 0.7, 0.6)  # all figures at once, while the report runs past MAX_PAGES
MAX_PASSES = 6  # layouts tried after the first that fits (each is one WeasyPrint render)


# ----------------------------------------------------------------------------------------------- formats


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def pm(stat: Mapping | None, digits: int = 3) -> str:
    """'0.955 ± 0.048', never broken across lines."""
    return "n/a" if not stat else f"{fmt(stat['mean'], digits)}{NBSP}±{NBSP}{fmt(stat['std'], digits)}"


def pct(value: float | None, digits: int = 0) -> str:
    """'95 %', with a non-breaking space."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}{NBSP}%"


def unit(value: float | None, name: str, digits: int = 0) -> str:
    """'66 s', '320 px', '1.8 GB': a number and its unit joined by a non-breaking space."""
    return "n/a" if value is None else f"{value:,.{digits}f}{NBSP}{name}"


def signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}".replace("-", "−")


def label(name: str) -> str:
    """A folder-style class name as words: 'broken_large' -> 'broken large'."""
    return str(name).replace("_", " ")


UNITS = re.compile(r"(\d) (%|px|s|ms|GB|MB|mm)\b")


def nobreak(text: str) -> str:
    """Text from the results (an attempt's name, say) with each number joined to its unit: '320 px'."""
    return UNITS.sub(rf"\1{NBSP}\2", str(text))


def join_and(items) -> str:
    items = [str(i) for i in items]
    return "".join(items) if len(items) <= 1 else ", ".join(items[:-1]) + " and " + items[-1]


def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
                             undefined=jinja2.StrictUndefined, lstrip_blocks=True, trim_blocks=False)
    env.filters.update(fmt=fmt, pm=pm, pct=pct, unit=unit, signed=signed, label=label, join_and=join_and,
                       nobreak=nobreak)
    return env


def render_html(context: Mapping) -> str:
    """The report as one HTML string (templates/report.html.j2 and its partials), in its visible form: a name that
    is not UTF-8 (from the results, or from --name) shows as ``\\xNN``, which the HTML and PDF writers accept."""
    return visible_text(environment().get_template("report.html.j2").render(
        **context, cite=context["references"].cite, targets=WORD_TARGETS))


# ----------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """What the layout may move: each figure's image height (mm) and the sections that start on a new page."""

    heights: tuple[tuple[str, float], ...]
    breaks: frozenset[str] = frozenset()

    @classmethod
    def preferred(cls, scale: float = 1.0) -> Layout:
        return cls(tuple((key, max(size[1], size[0] * scale)) for key, size in FIGURES.items()))

    @property
    def height(self) -> dict[str, float]:
        return dict(self.heights)

    def with_height(self, key: str, mm: float) -> Layout:
        low, high = FIGURES[key][1], FIGURES[key][2]
        return Layout(tuple((k, min(high, max(low, mm)) if k == key else v) for k, v in self.heights), self.breaks)

    def with_break(self, section: str) -> Layout:
        return Layout(self.heights, self.breaks | {section})


def _content_boxes(box, figure: str | None = None, section: str | None = None) -> Iterator[tuple]:
    """Every line and image box under ``box``: (box, the figure ``fig-*`` it belongs to, its section ``q*``)."""
    from weasyprint.formatting_structure import boxes

    element = getattr(box, "element", None)
    ident = element.get("id") if element is not None and hasattr(element, "get") else None
    if ident and ident.startswith("fig-"):
        figure = ident
    elif ident and getattr(box, "element_tag", None) == "section":
        section = ident
    if isinstance(box, boxes.ReplacedBox):
        yield box, figure, section
        return
    if isinstance(box, boxes.LineBox):
        yield box, figure, section
        yield from ((b, figure, section) for b in box.descendants() if isinstance(b, boxes.ReplacedBox))
        return
    for child in getattr(box, "children", []):
        if not isinstance(child, boxes.MarginBox):
            yield from _content_boxes(child, figure, section)


@dataclass
class PageFill:
    """Where the content of one page ends, in CSS pixels from the top of its text area, and what it holds."""

    height: float  # the text area's height
    bottom: float  # the lowest content on the page
    first_figure: str | None  # the figure the page's first content belongs to, if it starts with one
    first_section: str | None  # the section of the page's first content
    figures: dict[str, float]  # figure -> height of its content on this page (image and caption)
    sections: list[str]  # the sections with content on this page, in order
    last_heading: str | None = None  # the section whose heading is the page's last content, if one is
    images: dict[str, float] | None = None  # figure -> its image's drawn height (mm), which max-width may limit

    @property
    def blank(self) -> float:
        return max(0.0, 1 - self.bottom / self.height)


def page_fills(document) -> list[PageFill]:
    """How full each page of a rendered WeasyPrint document is, and which figures and sections it holds."""
    fills = []
    for page in document.pages:
        page_box = page._page_box  # WeasyPrint's laid-out page; positions are in CSS pixels
        top = page_box.content_box_y()
        found = list(_content_boxes(page_box))
        bottom = max((b.position_y + b.margin_height() - top for b, _, _ in found), default=0.0)
        first = min(found, key=lambda item: item[0].position_y) if found else (None, None, None)
        spans: dict[str, list[float]] = {}
        images: dict[str, float] = {}
        for b, figure, _ in found:
            if figure:
                spans.setdefault(figure, []).extend([b.position_y, b.position_y + b.margin_height()])
                if getattr(b, "element_tag", None) == "img":
                    images[figure] = b.height / MM
        sections = list(dict.fromkeys(s for _, _, s in found if s))
        last = max(found, key=lambda item: item[0].position_y + item[0].margin_height()) if found else None
        heading = last[2] if last and getattr(last[0], "element_tag", None) in ("h1", "h2") else None
        fills.append(PageFill(page_box.height, bottom, first[1], first[2],
                              {f: max(v) - min(v) for f, v in spans.items()}, sections, heading, images))
    return fills


def blank_shares(document) -> list[float]:
    """The empty share of each page's text area below its last content."""
    return [fill.blank for fill in page_fills(document)]


def separated_figures(fills: list[PageFill]) -> list[tuple[int, str]]:
    """Figures that open a page while their section began on an earlier one: (page index, figure)."""
    return [(i, fill.first_figure) for i, fill in enumerate(fills) if i and fill.first_figure
            and fill.first_section in fills[i - 1].sections]


def orphan_headings(fills: list[PageFill]) -> list[str]:
    """Sections whose heading ends a page while their text starts on the next one."""
    return [fill.last_heading for fill in fills[:-1] if fill.last_heading]


def _fits_gap(layout: Layout, fills: list[PageFill], page: int, figure: str) -> Layout | None:
    """``layout`` with ``figure`` (on ``page``) shrunk to fit the gap at the end of the page before, if it can."""
    key = figure.removeprefix("fig-")
    need = fills[page].figures[figure] - (fills[page - 1].height - fills[page - 1].bottom) + 4 * MM
    smaller = _drawn(fills, figure) - need / MM
    return layout.with_height(key, smaller) if smaller >= FIGURES[key][1] else None


def _drawn(fills: list[PageFill], figure: str) -> float:
    """A figure's image height as drawn (mm): below its max-height when the page width limits it."""
    return next((fill.images[figure] for fill in fills if fill.images and figure in fill.images), 0.0)


def _growable(layout: Layout, fills: list[PageFill], last_page: int) -> list[str]:
    """Figures on pages up to ``last_page`` that may still grow, the nearest first: below their largest size and
    drawn at their max-height (a figure drawn lower is as wide as the page allows)."""
    figures = [f for fill in fills[:last_page + 1] for f in fill.figures]
    return [f.removeprefix("fig-") for f in reversed(figures)
            if layout.height[f.removeprefix("fig-")] < FIGURES[f.removeprefix("fig-")][2] - 1
            and _drawn(fills, f) >= layout.height[f.removeprefix("fig-")] - 1]


def next_layout(layout: Layout, fills: list[PageFill], *, move_sections: bool = True) -> Layout | None:
    """One step towards a layout in which every heading and figure is on a page with its section's text and no
    page but the last is more than AIM_BLANK empty: start a section whose heading was left alone on the new page;
    shrink a figure pushed past its section into the gap it left, else start its section on the new page (or,
    without ``move_sections``, grow a figure above it so that some of the section's text goes over with it); grow a
    figure on or before a page that is too empty; pull a last page with next to nothing on it back. None: nothing
    is left to try."""
    for section in orphan_headings(fills):
        if section not in layout.breaks:
            return layout.with_break(section)
    for page, figure in separated_figures(fills):
        smaller = _fits_gap(layout, fills, page, figure)
        if smaller:
            return smaller
        growable = [] if move_sections else _growable(layout, fills, page - 1)
        if growable:
            gap = (fills[page - 1].height - fills[page - 1].bottom) / MM
            return layout.with_height(growable[0], layout.height[growable[0]] + gap + 12)
        section = fills[page].first_section
        if section and section not in layout.breaks:
            return layout.with_break(section)
    for page, fill in enumerate(fills[:-1]):
        if fill.blank <= AIM_BLANK:
            continue
        if fills[page + 1].first_figure:
            smaller = _fits_gap(layout, fills, page + 1, fills[page + 1].first_figure)
            if smaller:
                return smaller
        growable = _growable(layout, fills, page)
        if growable:
            return layout.with_height(growable[0], layout.height[growable[0]] + (fill.height - fill.bottom) / MM - 3)
        return None
    if len(fills) > 1 and 1 - fills[-1].blank < STUB_PAGE:
        overflow = fills[-1].bottom / MM + 6
        earlier = [f for p in fills[:-1] for f in p.figures]
        for figure in reversed(earlier):
            key = figure.removeprefix("fig-")
            if _drawn(fills, figure) - overflow >= FIGURES[key][1]:
                return layout.with_height(key, _drawn(fills, figure) - overflow)
    return None


# ----------------------------------------------------------------------------------------------- PDF


@dataclass
class Rendered:
    """A rendered report: its HTML, the WeasyPrint document, its layout and words per answer."""

    html: str
    document: Any
    layout: Layout
    word_counts: dict[str, int]
    base: Any = None  # what keeps the document's base folder reachable until it is written (see base_folder)

    @property
    def pages(self) -> int:
        return len(self.document.pages)

    @property
    def fills(self) -> list[PageFill]:
        return page_fills(self.document)

    @property
    def blank_shares(self) -> list[float]:
        return [fill.blank for fill in self.fills]

    @property
    def figure_heights(self) -> dict[str, float]:
        return self.layout.height


def base_folder(results: Path) -> tuple[str, Any]:
    """The folder WeasyPrint resolves the figures against, and what must live as long as the document (it loads
    the figures when the PDF is written). A results folder whose name is not UTF-8 is reached through a link with a
    plain name: WeasyPrint turns the base into a URL and back into another name, and would draw no figure."""
    import tempfile

    if visible_text(str(results)) == str(results):
        return str(results), None
    folder = tempfile.TemporaryDirectory(prefix="inspectkit-report-")  # removed when the document is dropped
    link = Path(folder.name) / "results"
    link.symlink_to(results.resolve(), target_is_directory=True)
    return str(link), folder


def render_document(html: str, base_url: str | os.PathLike):
    from weasyprint import CSS, HTML

    stylesheet = CSS(filename=str(TEMPLATES_DIR / "report.css"))
    return HTML(string=html, base_url=str(base_url)).render(stylesheets=[stylesheet])


def overflowing_section(document) -> str:
    """The section whose content runs past page MAX_PAGES (the last one that starts on or before it)."""
    last = "header"
    for index, page in enumerate(document.pages):
        if index >= MAX_PAGES:
            break
        for anchor in page.anchors:
            if anchor in SECTION_TITLES:
                last = anchor
    return SECTION_TITLES[last]


class PageBudgetError(UserError):
    """The report does not fit MAX_PAGES pages even with the smallest figures; the scripts exit 1 on it."""

    exit_code = 1


def _render(context: Mapping, layout: Layout, base: tuple[str, Any]) -> Rendered:
    context = {**context, "figure_heights": layout.height, "page_breaks": layout.breaks}
    counts = word_counts(render_html(context))  # the footnote shows them, so the HTML is made twice
    html = render_html({**context, "word_counts": counts})
    return Rendered(html, render_document(html, base[0]), layout, counts, base[1])


def layout_score(rendered: Rendered) -> tuple:
    """Lower is better: within the page budget, no figure away from its section, no page but the last too
    empty (MAX_BLANK, then AIM_BLANK), no last page with next to nothing on it, then the emptiest page but the
    last."""
    fills = rendered.fills
    worst = max((f.blank for f in fills[:-1]), default=0.0)
    stub = len(fills) > 1 and 1 - fills[-1].blank < STUB_PAGE
    apart = len(separated_figures(fills)) + len(orphan_headings(fills))
    return (rendered.pages > MAX_PAGES, apart, worst > MAX_BLANK, worst > AIM_BLANK, stub, round(worst, 3))


def render_report(context: Mapping, base_url: str | os.PathLike) -> Rendered:
    """Render within MAX_PAGES (all figures shrunk step by step while it runs over), then move figure sizes and
    page breaks (``next_layout``) while that improves ``layout_score``; the best layout found is returned. A
    PageBudgetError naming the section when even the smallest figures run over."""
    base_url = base_folder(Path(base_url))
    for scale in SHRINK_STEPS:
        best = _render(context, Layout.preferred(scale), base_url)
        if best.pages <= MAX_PAGES:
            break
    if best.pages > MAX_PAGES:
        raise PageBudgetError(f"the report has {best.pages} pages even with the smallest figures; "
                              f"{overflowing_section(best.document)} runs past page {MAX_PAGES}: shorten it")
    first, rendered = best, {best.layout: best}
    # first move whole sections to new pages; if a page is then still too empty, let sections run over instead
    for move_sections in (True, False):
        candidate, seen = first, {first.layout}
        for _ in range(MAX_PASSES):
            if layout_score(best)[:3] == (False, 0, False) and (move_sections or layout_score(best)[3:5] == (
                    False, False)):
                break
            layout = next_layout(candidate.layout, candidate.fills, move_sections=move_sections)
            if layout is None or layout in seen:
                break
            seen.add(layout)
            if layout not in rendered:
                rendered[layout] = _render(context, layout, base_url)
            candidate = rendered[layout]
            if layout_score(candidate) < layout_score(best):
                best = candidate
        if layout_score(best)[:3] == (False, 0, False):  # within the rules: no need for the other way
            break
    return best


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes or text through ``results.atomic_write``: no half-written report, and the umask honoured."""
    from ..results import atomic_write

    return atomic_write(path, data)
