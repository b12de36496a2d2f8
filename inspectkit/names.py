"""Names made from input names: flat output file names that are unique by construction, and text safe to show
(written into a file or printed on one line) for any name the file system can hold.

A file name that is not UTF-8 (``b"caf\\xe9.png"``) reaches Python as a string with a lone surrogate per
undecodable byte (``"caf\\udce9.png"``, os.fsdecode's surrogateescape); such a string cannot be encoded as UTF-8.
``visible_text`` shows each such byte as ``\\xNN`` (``caf\\xe9.png``); ``original_text`` turns that back, so that
``os.fsencode(original_text(shown))`` is the name on disk (a name that itself holds the four characters ``\\xe9``
after a non-UTF-8 byte reads back as that byte: the one ambiguity of a readable form).
"""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import PurePosixPath

_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
PLAIN_SUFFIX = ".png"  # the one suffix a flat stem leaves out
MAX_NAME_BYTES = 200  # flat names stay well under the usual 255-byte limit, with room for a temporary suffix


def _shown(char: str) -> str:
    code = ord(char)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def visible_text(text: str) -> str:
    """``text`` with every lone surrogate (a byte that was not UTF-8, decoded with surrogateescape) shown as
    ``\\xNN``, the byte's value; any other lone surrogate as ``\\uNNNN``. Text that is valid already is returned
    unchanged, so the result always encodes as UTF-8."""
    return _SURROGATE.sub(lambda m: _shown(m.group()), text)


def _visible_on_encode(error: UnicodeError) -> tuple[str, int]:
    """A codec error handler: what cannot be encoded is written as ``visible_text`` shows it (a byte that was not
    UTF-8 as ``\\xNN``), any other character as a backslash escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    chunk = error.object[error.start:error.end]
    return "".join(_shown(c) if _SURROGATE.match(c) else c.encode("ascii", "backslashreplace").decode("ascii")
                   for c in chunk), error.end


VISIBLE_ERRORS = "inspectkit.visible"  # the handler's name, e.g. for sys.stderr.reconfigure(errors=...)
codecs.register_error(VISIBLE_ERRORS, _visible_on_encode)


def original_text(shown: str) -> str:
    """The inverse of ``visible_text`` for file names: ``\\xNN`` (NN from 80 to ff) back to the byte's surrogate,
    so ``os.fsencode(original_text(shown))`` gives the bytes of the name on disk."""
    return _SHOWN_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), shown)


def one_line(text: str) -> str:
    """``visible_text`` with control characters (newline, carriage return, tab, escape, ...) shown as ``\\xNN``:
    a name can neither break a one-line message nor forge a line of its own."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", visible_text(text))


def _percent_odd(part: str) -> str:
    """Each byte that is not UTF-8, and each control character, as ``%XX``."""
    part = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", part)
    return _SURROGATE.sub(lambda m: (f"%{ord(m.group()) - 0xDC00:02X}" if 0xDC80 <= ord(m.group()) <= 0xDCFF
                                     else f"%u{ord(m.group()):04X}"), part)


def _escape_part(part: str) -> str:
    """A path part that cannot be mistaken for a separator and is plain UTF-8 without control characters: ``%``
    is always escaped, ``_`` where the part holds ``__`` or starts or ends with ``_``, and each byte that is not
    UTF-8 or is a control character as ``%XX``. Ordinary names (``broken_large``) are unchanged."""
    part = part.replace("%", "%25")
    if "__" in part or part.startswith("_") or part.endswith("_"):
        part = part.replace("_", "%5F")
    return _percent_odd(part)


def _fit(name: str, suffix: str, whole: str) -> str:
    """``name + suffix``, with ``name`` cut to fit ``MAX_NAME_BYTES`` and ended by a hash of ``whole`` if needed."""
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8", "surrogateescape"))
    if len(name.encode("utf-8")) > room:
        digest = hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = name.encode("utf-8")[:room - len(digest) - 1].decode("utf-8", "ignore") + "~" + digest
    return name + suffix


def plain_name(name: str) -> str:
    """A file name made from one input name (a folder's), for an output named after it: plain UTF-8 (bytes that
    are not, and control characters, as ``%XX``) and short enough for any file system."""
    return _fit(_percent_odd(name), "", name)


def flat_name(file: str, suffix: str | None = None) -> str:
    """A flat file name whose stem is unique by construction, for the relative path ``file`` (``/``-separated):
    ``test/broken_large/000.png`` -> ``test__broken_large__000.png``.

    Parts are joined with ``__`` after escaping (``_escape_part``), so ``a__b/c.png`` and ``a/b__c.png`` stay
    apart. A file that is not ``.png`` keeps its suffix in the stem (``000.jpg`` -> ``000%2Ejpg``), so it cannot
    share a stem with a ``000.png`` beside it. The name ends in ``suffix`` (``.png`` for a picture made from the
    file), or the file's own if not given. A name longer than ``MAX_NAME_BYTES`` is cut and ends in a hash of the
    whole path, so it stays unique and fits the file system.
    """
    path = PurePosixPath(file)
    own = path.suffix
    stem = _escape_part(path.stem)
    if own != PLAIN_SUFFIX:
        stem = f"{stem}%2E{_escape_part(own[1:])}"
    name = "__".join([*(_escape_part(part) for part in path.parent.parts), stem])
    return _fit(name, own if suffix is None else suffix, file)
