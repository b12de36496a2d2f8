"""Fetching MVTec AD's official archive: resumable download with a progress bar, sha256 check, safe extraction."""

from __future__ import annotations

import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .errors import UserError
from .results import sha256_file

MVTEC_URL = ("https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/"
             "420938113-1629960298/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
CHUNK = 1 << 20


def download_file(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present, and verify the sha256.

    A checksum mismatch removes the partial file (so the next try starts afresh) and raises UserError.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise UserError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach {url} ({reason}); check the network, or download the archive yourself "
                        "and extract it under --data-root") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name
            ) as bar:
                while block := response.read(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
    if sha256:
        actual = _sha256(part)
        if actual != sha256.lower():
            part.unlink()
            raise UserError(f"sha256 of {dest.name} is {actual}, expected {sha256}; the partial file was removed, "
                            "run again to download afresh (or pass --sha256 if the archive changed)")
    os.replace(part, dest)
    return dest


def _sha256(path: Path) -> str:
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256", leave=False) as bar:
        return sha256_file(path, CHUNK, on_block=bar.update)


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UserError(f"refusing archive member with an unsafe path: {member.name}")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or ".." in target.parts:
            raise UserError(f"refusing archive link that points outside: {member.name} -> {member.linkname}")
    return name


def extract_categories(archive: Path, dest: Path, categories: list[str] | None) -> list[str]:
    """Extract the named top-level category folders (all when None) into ``dest``; return the names extracted.

    Every member is checked before anything is written: absolute paths, ``..`` and escaping links are refused.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            chosen = [m for m in members if categories is None or PurePosixPath(m.name).parts[0] in categories]
            found = sorted({PurePosixPath(m.name).parts[0] for m in chosen if len(PurePosixPath(m.name).parts) > 1})
            if categories is not None and (missing := sorted(set(categories) - set(found))):
                present = sorted({PurePosixPath(m.name).parts[0] for m in members if m.isdir()})
                raise UserError(f"{archive.name} has no category {', '.join(missing)}; it holds {', '.join(present)}")
            for member in tqdm(chosen, desc=f"extracting {', '.join(found)}", unit="file"):
                tar.extract(member, dest, filter="data")
    except tarfile.TarError as exc:
        first_line = str(exc).splitlines()[0].rstrip(":") if str(exc) else exc.__class__.__name__
        raise UserError(f"{archive} is not a readable tar archive ({first_line}); the server may have sent a web "
                        "page instead: delete the file, check --url, and download again") from None
    return found


def fetch_mvtec(data_root: Path, categories: list[str] | None, *, url: str = MVTEC_URL,
                sha256: str | None = MVTEC_SHA256) -> list[str]:
    """Download (or reuse) the archive under ``data_root`` and extract the wanted categories there."""
    if data_root.exists() and not data_root.is_dir():
        raise UserError(f"--data-root {data_root} is a file, not a folder; point it at a folder to download into")
    try:
        data_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --data-root {data_root} ({exc.strerror or exc}); choose a writable "
                        "folder") from None
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "mvtec_anomaly_detection.tar.xz"
    archive = data_root / name
    if not archive.exists():
        download_file(url, archive, sha256=sha256)
    return extract_categories(archive, data_root, categories)
