"""Word counts as a word processor makes them: whitespace-separated tokens of each written answer."""

from __future__ import annotations

from inspectkit.report.words import WORD_TARGETS, count_words, word_budget, word_counts


def test_every_whitespace_token_is_a_word():
    assert count_words("Macro-F1 is 0.93 ± 0.02 — fine.") == 7  # "±" and "—" count, as in a word processor
    assert count_words("95 % of 21\u00a0images") == 5  # a non-breaking space still separates words
    assert count_words("  ") == 0


def test_answers_are_counted_apart_and_tags_do_not_split_words():
    html = ('<div data-answer="q2"><p>one <b>two</b>-three</p><p>four</p></div><p>not counted</p>'
            '<div data-answer="q4"><p>x</p><p>y<br>z</p></div><img src="a.png">')
    assert word_counts(html) == {"q2": 3, "q4": 3}


def test_the_budget_allows_twenty_percent_either_way():
    budget = word_budget({"q2": 180, "q3": 181, "q4": 80, "q5": 119})
    assert [budget[k]["ok"] for k in ("q2", "q3", "q4", "q5")] == [True, False, True, False]
    assert budget["q4"]["target"] == WORD_TARGETS["q4"] == 100
