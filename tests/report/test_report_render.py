"""Number formats that never split a number from its unit, and the page measurements the layout is decided by."""

from __future__ import annotations

import pytest

from inspectkit.report import render

NBSP = "\u00a0"


def test_numbers_and_units_are_joined_by_a_non_breaking_space():
    assert render.pct(0.953) == f"95{NBSP}%" and render.pct(0.0117, 1) == f"1.2{NBSP}%"
    assert render.unit(65.58, "s") == f"66{NBSP}s" and render.unit(None, "s") == "n/a"
    assert render.pm({"mean": 0.9545, "std": 0.0475}) == f"0.955{NBSP}±{NBSP}0.048"
    assert render.nobreak("Fine-tuning, 320 px, new head") == f"Fine-tuning, 320{NBSP}px, new head"
    assert render.signed(-0.0113) == "−0.011" and render.label("broken_large") == "broken large"


@pytest.fixture
def document(tmp_path):
    """Render a bit of HTML with the report's stylesheet; ``picture.png`` is an image it may show."""
    from PIL import Image

    Image.new("RGB", (400, 600), "grey").save(tmp_path / "picture.png")
    return lambda html: render.render_document(html, tmp_path)


def test_blank_share_is_the_empty_part_below_the_last_content(document):
    half = document('<section id="q1"><div style="height: 130mm">x</div><p>end</p></section>')
    full = document('<section id="q1"><div style="height: 262mm"></div><p>end</p></section>')
    (page,) = render.page_fills(half)
    assert page.blank == pytest.approx(1 - 134 / 273, abs=0.03)  # 273 mm of text area on A4 with our margins
    assert render.page_fills(full)[0].blank < 0.03


def test_a_figure_pushed_away_from_its_section_and_a_lone_heading_are_found(document):
    figure = ('<figure id="fig-q4"><img src="picture.png" style="height: 60mm"><figcaption>caption</figcaption>'
              '</figure>')
    pushed = render.page_fills(document(f'<section id="q4"><h2>4</h2><div style="height: 230mm"></div>{figure}'
                                        '</section>'))
    assert len(pushed) == 2 and render.separated_figures(pushed) == [(1, "fig-q4")]
    assert pushed[1].images["fig-q4"] == pytest.approx(60, abs=0.5)
    assert pushed[1].figures["fig-q4"] > 60 * render.MM  # the image and its caption
    kept = render.page_fills(document(f'<section id="q4"><h2>4</h2><div style="height: 150mm"></div>{figure}'
                                      '</section>'))
    assert len(kept) == 1 and render.separated_figures(kept) == []
    lone = render.page_fills(document('<div style="height: 255mm"></div><section id="q5"><h2 style="break-after: '
                                      'auto">5</h2><p style="orphans: 4">a<br>b<br>c<br>d</p></section>'))
    assert [f.last_heading for f in lone] == ["q5", None] and render.orphan_headings(lone) == ["q5"]


def test_next_layout_shrinks_a_pushed_figure_into_the_gap_it_left():
    layout = render.Layout.preferred()
    gap_mm, figure_mm = 50, 64 + 6
    fills = [render.PageFill(1000, 1000 - gap_mm * render.MM, None, "q4", {}, ["q4"]),
             render.PageFill(1000, figure_mm * render.MM, "fig-q4", "q4", {"fig-q4": figure_mm * render.MM}, ["q4"],
                             None, {"fig-q4": 64.0})]
    assert render.next_layout(layout, fills).height["q4"] == pytest.approx(64 - (figure_mm - gap_mm + 4), abs=0.1)
    tight = [render.PageFill(1000, 1000 - 10 * render.MM, None, "q4", {}, ["q4"]), fills[1]]
    assert render.next_layout(layout, tight).breaks == {"q4"}  # too little room: the section moves instead


def test_without_moving_sections_a_figure_above_grows_so_the_section_runs_over():
    layout = render.Layout.preferred()
    previous = render.PageFill(1000, 1000 - 10 * render.MM, None, "q1", {"fig-q1": 200.0}, ["q1", "q4"], None,
                               {"fig-q1": layout.height["q1"]})
    pushed = render.PageFill(1000, 300, "fig-q4", "q4", {"fig-q4": 70 * render.MM}, ["q4"], None, {"fig-q4": 64.0})
    grown = render.next_layout(layout, [previous, pushed], move_sections=False)
    assert grown.breaks == frozenset() and grown.height["q1"] > layout.height["q1"]
    width_limited = render.PageFill(1000, 1000 - 10 * render.MM, None, "q1", {"fig-q1": 200.0}, ["q1", "q4"], None,
                                    {"fig-q1": layout.height["q1"] - 10})  # drawn lower: as wide as it can be
    assert render.next_layout(layout, [width_limited, pushed], move_sections=False).breaks == {"q4"}
