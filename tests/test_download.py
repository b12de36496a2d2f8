"""Download against a loopback HTTP server: progress, resume, checksum, and safe partial extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inspectkit.download import download_file, extract_categories, fetch_mvtec
from inspectkit.errors import UserError
from inspectkit.synthetic import make_category


class _RangeServer:
    """Serves one byte string at /archive.tar.xz on 127.0.0.1, honouring 'Range: bytes=N-'."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.served = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                start = 0
                header = self.headers.get("Range")
                if header:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(outer.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                else:
                    self.send_response(200)
                body = outer.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                outer.served += len(body)  # before writing: the client may finish reading before this thread resumes
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.tar.xz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _tar_xz(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mvtec_like_archive(tmp_path_factory):
    """A .tar.xz shaped like MVTec's: two category folders and two loose text files."""
    src = tmp_path_factory.mktemp("src")
    for name in ("alpha", "beta"):
        make_category(src, name, image_size=32, n_train=3, n_test_good=1, n_per_defect=1, seed=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name in ("alpha", "beta"):
            tar.add(src / name, arcname=name)
        for loose in ("license.txt", "readme.txt"):
            (src / loose).write_text("text")
            tar.add(src / loose, arcname=loose)
    return buffer.getvalue()


def test_fetch_extracts_only_the_requested_category(tmp_path, mvtec_like_archive):
    sha = hashlib.sha256(mvtec_like_archive).hexdigest()
    with _RangeServer(mvtec_like_archive) as server:
        found = fetch_mvtec(tmp_path, ["alpha"], url=server.url, sha256=sha)
    assert found == ["alpha"]
    assert (tmp_path / "alpha/train/good/000.png").is_file()
    assert not (tmp_path / "beta").exists()
    assert (tmp_path / "archive.tar.xz").read_bytes() == mvtec_like_archive


def test_partial_download_resumes_from_where_it_stopped(tmp_path, mvtec_like_archive):
    half = len(mvtec_like_archive) // 2
    (tmp_path / "archive.tar.xz.part").write_bytes(mvtec_like_archive[:half])
    with _RangeServer(mvtec_like_archive) as server:
        download_file(server.url, tmp_path / "archive.tar.xz",
                      sha256=hashlib.sha256(mvtec_like_archive).hexdigest())
        assert server.served == len(mvtec_like_archive) - half
    assert (tmp_path / "archive.tar.xz").read_bytes() == mvtec_like_archive
    assert not (tmp_path / "archive.tar.xz.part").exists()


def test_checksum_mismatch_is_an_error_and_drops_the_partial_file(tmp_path, mvtec_like_archive):
    with _RangeServer(mvtec_like_archive) as server, pytest.raises(UserError, match="sha256"):
        download_file(server.url, tmp_path / "archive.tar.xz", sha256="0" * 64)
    assert not (tmp_path / "archive.tar.xz").exists()
    assert not (tmp_path / "archive.tar.xz.part").exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot reach"):
        download_file("http://127.0.0.1:9/none.tar.xz", tmp_path / "none.tar.xz", timeout=2)


@pytest.mark.parametrize("bad_name", ["../escape.txt", "/abs/escape.txt", "alpha/../../escape.txt"])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, bad_name):
    archive = tmp_path / "evil.tar.xz"
    archive.write_bytes(_tar_xz({"alpha/train/good/ok.txt": b"ok", bad_name: b"owned"}))
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match="unsafe path"):
        extract_categories(archive, dest, None)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists()


def test_missing_category_in_archive_names_what_is_there(tmp_path, mvtec_like_archive):
    archive = tmp_path / "a.tar.xz"
    archive.write_bytes(mvtec_like_archive)
    with pytest.raises(UserError, match="no category hazelnut; it holds alpha, beta"):
        extract_categories(archive, tmp_path / "dest", ["hazelnut"])


def test_stats_cli_downloads_then_reports(tmp_path, mvtec_like_archive):
    import stats

    sha = hashlib.sha256(mvtec_like_archive).hexdigest()
    out = tmp_path / "results"
    with _RangeServer(mvtec_like_archive) as server:
        stats.main(stats.get_args_parser().parse_args(
            ["--category", "beta", "--download", "--url", server.url, "--sha256", sha,
             "--data-root", str(tmp_path / "data"), "--out", str(out), "--no-figures"]))
    assert (tmp_path / "data/beta").is_dir() and not (tmp_path / "data/alpha").exists()
    assert (out / "stats_beta.json").is_file()


def test_a_data_root_that_is_a_file_is_one_line(tmp_path, mvtec_like_archive):
    (tmp_path / "data").write_text("not a folder")
    with _RangeServer(mvtec_like_archive) as server, pytest.raises(UserError, match=r"--data-root .*data is a "
                                                                                     r"file, not a folder"):
        fetch_mvtec(tmp_path / "data", ["alpha"], url=server.url, sha256=None)
    with pytest.raises(UserError, match="cannot create --data-root"):
        fetch_mvtec(tmp_path / "data" / "below", ["alpha"], url="http://127.0.0.1:9/x.tar.xz", sha256=None)


@pytest.mark.parametrize("payload", [b"<html><body>Please log in</body></html>\n" * 20, b""])
def test_a_served_file_that_is_not_an_archive_is_one_line(tmp_path, payload):
    with _RangeServer(payload) as server, pytest.raises(UserError) as caught:
        fetch_mvtec(tmp_path, ["alpha"], url=server.url, sha256=None)
    message = str(caught.value)
    assert "\n" not in message and "is not a readable tar archive" in message and "check --url" in message
