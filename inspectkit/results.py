"""Reading and writing results atomically (JSON, CSV, text, bytes), the checks on output paths made before any work,
and the provenance block every result carries.

Text written here is always valid UTF-8: a name that is not (a file named with a Latin-1 byte) is written in its
visible form (``names.visible_text``: ``caf\\xe9.png``). CSV cells that a spreadsheet would run as a formula are
neutralised (``csv_cell``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UserError
from .names import visible_text

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMP_PREFIX_CHARS = 40  # of the file's name in its temporary name: at most 160 bytes, so it fits where the file does


def ensure_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `path` if needed and check that files can be written there; a UserError naming ``flag`` (the option
    the user typed) and the real cause otherwise."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write to {flag} {out}: a folder above it is a file; choose another "
                        "folder") from None
    except OSError as exc:
        raise UserError(f"cannot write to {flag} {out}: {exc.strerror or exc}; choose a writable folder") from None
    return out


def check_output_file(path: str | os.PathLike, flag: str, reads: Iterable[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that the file an output flag (``--csv``) names can be written: not a folder, in a
    folder that exists, and not one of the files the command ``reads`` (``check_not_input``). A UserError naming
    ``flag`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'predictions.csv'}")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise UserError(f"{flag} {path}: the folder {parent} {what}; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: the folder {parent} is not writable; choose another path")
    check_not_input(path, reads, flag)
    return path


def _file_id(path: str | os.PathLike, follow: bool) -> tuple[int, int] | None:
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def check_not_input(outputs: str | os.PathLike | Iterable[str | os.PathLike],
                    reads: Iterable[str | os.PathLike] | Mapping[str | os.PathLike, str], flag: str) -> None:
    """Refuse outputs that would replace a file the same command reads (the detector, weights, images, results):
    a UserError naming ``flag`` (the option, or the output's role) when a directory entry one of ``outputs`` names
    is one of ``reads``, whatever the spelling (relative, ``..``, a symbolic link to it, a hard link). ``reads``
    may map each path to what it is for the message (``"the --load detector"``). Each path is looked at once, so
    thousands of images cost thousands of ``stat`` calls, not their square."""
    outputs = [outputs] if isinstance(outputs, str | os.PathLike) else list(outputs)
    # a write replaces the entry itself (atomic_write's rename), so a symbolic link there is not its target
    existing = {key: output for output in outputs if (key := _file_id(output, follow=False)) is not None}
    if not existing:
        return  # nothing there yet: nothing to replace
    roles = reads if isinstance(reads, Mapping) else {}
    for source in reads:
        if (key := _file_id(source, follow=True)) in existing:
            what = roles.get(source, "a file")
            raise UserError(f"{flag} {existing[key]} would replace {what} ({source}) that this command reads; "
                            "choose another path")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return visible_text(str(obj))
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class UnwritablePath(UserError):
    """A path we must write and cannot: its folder is a file, it is a folder, or writing is not permitted."""


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a function writing to a binary file) to ``path`` through a
    uniquely named temporary file in the same folder and an atomic rename: readers see the old file or the
    whole new one, and two processes writing the same path never share a temporary file. The file gets the
    mode a plain ``open`` would (0o666 less the umask). Text is written as UTF-8 in its visible form (a byte of a
    name that is not UTF-8 as ``\\xNN``, see ``names.visible_text``). A path that cannot be written raises
    ``UnwritablePath``."""
    path = Path(path)
    if path.is_dir():
        raise UnwritablePath(f"cannot write {path}: it is a folder; remove it or choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name starts like the file's, cut so that it is never longer than a name that fits
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:TEMP_PREFIX_CHARS]}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        raise UnwritablePath(f"cannot write {path}: a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise UnwritablePath(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(visible_text(content).encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnwritablePath(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def _visible_data(data: Any) -> Any:
    """``data`` with every string (keys too) in its visible form; other values as they are."""
    if isinstance(data, str):
        return visible_text(data)
    if isinstance(data, dict):
        return {_visible_data(k): _visible_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_visible_data(v) for v in data]
    return data


def json_text(data: Any, indent: int | None = 2) -> str:
    """``data`` as JSON text (ASCII, no NaN): every string in its visible form, so that a name that is not UTF-8
    reads as ``caf\\xe9.png`` rather than as a lone surrogate escape that strict JSON readers refuse."""
    text = json.dumps(data, indent=indent, default=_json_default, allow_nan=False)
    if "\\ud" in text:  # a surrogate escape (or a name holding that text): redo with the strings made visible
        text = json.dumps(_visible_data(data), indent=indent, default=_json_default, allow_nan=False)
    return text


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON (``json_text``) through ``atomic_write``."""
    return atomic_write(path, json_text(data) + "\n")


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP's CSV-injection list
CSV_QUOTE = "'"


def csv_cell(value: Any) -> Any:
    """One CSV cell that a spreadsheet shows as text and never runs as a formula: a string starting with
    ``= + - @``, tab or carriage return gets a leading ``'`` (spreadsheets hide it), and so does one starting with
    ``'`` itself, so the original is always recoverable: a cell that starts with ``'`` is the original with one
    ``'`` added; drop it. Numbers (``-0.12``) stay numbers; None is an empty cell."""
    if isinstance(value, str):
        value = visible_text(value)
        if value.startswith((*CSV_FORMULA_START, CSV_QUOTE)):
            return CSV_QUOTE + value
    return value


def csv_original(cell: str) -> str:
    """The value ``csv_cell`` was given, from the text of its cell (the inverse, for a reader of our CSV)."""
    return cell[1:] if cell.startswith(CSV_QUOTE) else cell


def csv_text(rows: Iterable[dict], fieldnames: list[str]) -> str:
    """``rows`` as CSV text with a header: every cell through ``csv_cell``. The one way the toolkit writes CSV."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return text.getvalue()


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: list[str]) -> Path:
    """Write ``rows`` (``csv_text``) through ``atomic_write``."""
    return atomic_write(path, csv_text(rows, fieldnames))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by `write_json`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


Fields = dict[str, type | tuple[type, ...]]  # dotted path ("test.macro_f1.mean") -> the type(s) it must have
NUMBER = (int, float)


def schema_problem(data: Any, fields: Fields) -> str | None:
    """What is wrong with ``data`` against ``fields`` (the first missing or mistyped field), or None."""
    if not isinstance(data, dict):
        return f"it holds {type(data).__name__ if data is not None else 'null'}, not an object"
    for dotted, types in fields.items():
        value: Any = data
        for i, part in enumerate(parts := dotted.split(".")):
            if not isinstance(value, dict) or part not in value:
                return f"it has no field '{'.'.join(parts[:i + 1])}'"
            value = value[part]
        wanted = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            names = " or ".join(t.__name__ for t in wanted)
            return f"its field '{dotted}' is {type(value).__name__}, not {names}"
    return None


def read_result(path: str | os.PathLike, fields: Fields, remake: str, *, category: str | None = None) -> dict:
    """Read a result JSON made by an earlier step and check it once, here: valid JSON, an object with ``fields``,
    and (if given) this ``category``. Anything else is a UserError naming the file, what is wrong, and ``remake``,
    the command that makes the file again."""
    path = Path(path)
    try:
        data = read_json(path)
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = "it is empty" if not exc.doc.strip() else f"it is not valid JSON (line {exc.lineno}: {exc.msg})"
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or exc})"
    else:
        problem = schema_problem(data, fields)
        if problem is None and category is not None and "category" in data and data["category"] != category:
            problem = f"it is for category '{data['category']}', not '{category}'"
    if problem is not None:
        raise UserError(f"{path} is damaged or not the file expected: {problem}; make it again with: {remake}")
    return data


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20,
                on_block: Callable[[int], object] | None = None) -> str:
    """Hex sha256 of a file's bytes (the one sha256 helper); ``on_block(n)`` is told each block's size, e.g. a
    progress bar's ``update``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            if on_block is not None:
                on_block(len(block))
    return digest.hexdigest()


@functools.cache
def git_commit() -> str:
    """The checkout's HEAD commit, with '+dirty' when tracked files differ; 'unknown' outside git.

    Read once per process (at the first result written), so a long run records the code it started with.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def command_line(command: Sequence[str] | None = None) -> str:
    """``command`` (the script, then its arguments) as one shell-quoted line, the script by its file name; by
    default this process's own ``sys.argv``."""
    script, *arguments = sys.argv if command is None else command
    return " ".join(shlex.quote(a) for a in [Path(script).name, *arguments])


def provenance(*, seed: int | None = None, weights: dict | None = None, data_root: str | os.PathLike | None = None,
               demo: bool = False, command: Sequence[str] | None = None, **extra: Any) -> dict:
    """How a result was made: command, commit, time, seed, weights, data and software versions. ``command`` is
    the command line that made it (``command_line``): a script passes ``args.command`` (``cli.script_parser``),
    which run_all.py sets to each step's own; None reads ``sys.argv``."""
    import numpy
    import torch
    import torchvision

    record = {
        "command": command_line(command),
        "git_commit": git_commit(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "weights": weights,
        "data_root": str(data_root) if data_root is not None else None,
        "demo_data": bool(demo),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": numpy.__version__},
    }
    record.update(extra)
    return record
