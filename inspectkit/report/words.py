"""Word counts of the written answers, as a word processor counts them: every whitespace-separated token of the
prose inside the elements marked ``data-answer="qN"`` (so "±", "%" and "0.955" count as words), against each
answer's target.
"""

from __future__ import annotations

from html.parser import HTMLParser

WORD_TARGETS = {"q2": 150, "q3": 150, "q4": 100, "q5": 150}
WORD_TOLERANCE = 0.20
_VOID = frozenset({"br", "img", "hr", "meta", "link", "col", "wbr", "input", "source"})
_BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "td", "th", "tr", "table", "section", "br", "h1", "h2", "h3"})


class _AnswerText(HTMLParser):
    """Collects the text inside elements marked ``data-answer="qN"`` (the prose of each written answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, list[str]] = {}

    def _separate(self, tag: str) -> None:
        if tag in _BLOCKS and self.stack and self.stack[-1]:
            self.text.setdefault(self.stack[-1], []).append(" ")  # a block boundary ends a word

    def handle_starttag(self, tag, attrs):
        self._separate(tag)
        if tag in _VOID:
            return
        answer = dict(attrs).get("data-answer")
        self.stack.append(answer or (self.stack[-1] if self.stack else None))

    def handle_endtag(self, tag):
        self._separate(tag)
        if self.stack and tag not in _VOID:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1]:
            self.text.setdefault(self.stack[-1], []).append(data)


def count_words(text: str) -> int:
    """Whitespace-separated tokens, as a word processor counts words (a non-breaking space separates too)."""
    return len(text.split())


def answer_texts(html: str) -> dict[str, str]:
    """The prose of each written answer (``data-answer`` elements), keyed q1..q5."""
    parser = _AnswerText()
    parser.feed(html)
    # tags split no words ("<b>F1</b>-score" is one word), but block ends do
    return {key: "".join(parts) for key, parts in sorted(parser.text.items())}


def word_counts(html: str) -> dict[str, int]:
    """Words per written answer, keyed q1..q5."""
    return {key: count_words(text) for key, text in answer_texts(html).items()}


def word_budget(counts: dict[str, int]) -> dict[str, dict]:
    """Each answer's count against its target, with ``ok`` when within ±WORD_TOLERANCE."""
    out = {}
    for key, target in WORD_TARGETS.items():
        n = counts.get(key, 0)
        out[key] = {"words": n, "target": target, "ok": abs(n - target) <= WORD_TOLERANCE * target}
    return out
