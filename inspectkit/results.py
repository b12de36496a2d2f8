"""Reading and writing result JSON atomically, and the provenance block every result carries."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check that files can be written there; a UserError otherwise."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}; choose a writable folder") from None
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
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
    mode a plain ``open`` would (0o666 less the umask). A path that cannot be written raises ``UnwritablePath``."""
    path = Path(path)
    if path.is_dir():
        raise UnwritablePath(f"cannot write {path}: it is a folder; remove it or choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        raise UnwritablePath(f"cannot write {path}: a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise UnwritablePath(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnwritablePath(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON through ``atomic_write``."""
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"
    return atomic_write(path, text)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by `write_json`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
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


def provenance(*, seed: int | None = None, weights: dict | None = None, data_root: str | os.PathLike | None = None,
               demo: bool = False, **extra: Any) -> dict:
    """How a result was made: command, commit, time, seed, weights, data and software versions."""
    import numpy
    import torch
    import torchvision

    record = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
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
