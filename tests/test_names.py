"""inspectkit.names: any name the file system can hold becomes valid UTF-8 text that can be turned back into it, one
line that a name cannot break, and flat output names that are unique by construction and fit the file system."""

from __future__ import annotations

import os

import pytest

from inspectkit.names import MAX_NAME_BYTES, flat_name, one_line, original_text, plain_name, visible_text

LATIN1 = os.fsdecode(b"caf\xe9.png")  # what Python makes of a Latin-1 file name: a lone surrogate


def test_a_name_that_is_not_utf8_is_shown_and_recovered():
    assert LATIN1 == "caf\udce9.png"
    with pytest.raises(UnicodeEncodeError):
        LATIN1.encode("utf-8")
    shown = visible_text(LATIN1)
    assert shown == "caf\\xe9.png" and shown.encode("utf-8")
    assert os.fsencode(original_text(shown)) == b"caf\xe9.png"
    assert visible_text("café ±.png") == "café ±.png"  # valid names are left alone


def test_one_line_escapes_what_would_break_a_line():
    shown = one_line("a\nb\rc\td\x1b[31m" + LATIN1)
    assert "\n" not in shown and "\r" not in shown and "\t" not in shown and "\x1b" not in shown
    assert shown == "a\\x0ab\\x0dc\\x09d\\x1b[31mcaf\\xe9.png"


@pytest.mark.parametrize("a, b", [("x.png", "x.jpg"), ("a/b.png", "a__b.png"), ("a_/b.png", "a/_b.png"),
                                  ("caf%E9.png", os.fsdecode(b"caf\xe9.png")), ("t%09.png", "t\t.png")])
def test_flat_names_of_look_alike_paths_differ(a, b):
    assert flat_name(a, ".png") != flat_name(b, ".png")


def test_flat_names_are_plain_utf8_file_names():
    for name in (flat_name(os.fsdecode(b"dir\xff/caf\xe9.png"), ".png"), flat_name("a\nb/c\r.png", ".png")):
        assert name.encode("utf-8") and "/" not in name
        assert not any(ord(c) < 32 for c in name)
    assert flat_name(os.fsdecode(b"caf\xe9.png"), ".png") == "caf%E9.png"


def test_long_paths_get_short_unique_names(tmp_path):
    deep = "/".join(["d" * 120] * 4)
    first, second = flat_name(f"{deep}/a.png", ".png"), flat_name(f"{deep}/b.png", ".png")
    assert first != second
    assert len(first.encode()) <= MAX_NAME_BYTES and len(second.encode()) <= MAX_NAME_BYTES
    (tmp_path / first).write_bytes(b"")  # the file system takes it
    wide = "é" * 200  # 400 bytes: cut on a character boundary
    assert len(plain_name(wide).encode()) <= MAX_NAME_BYTES and plain_name(wide) != plain_name(wide + "x")
