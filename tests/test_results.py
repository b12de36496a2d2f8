"""Result files: atomic JSON writes, provenance, and the writable-folder check."""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest

from inspectkit.errors import UserError
from inspectkit.names import original_text
from inspectkit.results import (
    CSV_FORMULA_START,
    atomic_write,
    check_not_input,
    check_output_file,
    csv_cell,
    csv_original,
    ensure_writable_dir,
    provenance,
    read_json,
    write_csv,
    write_json,
)


def test_write_json_round_trips_numpy_and_leaves_no_temp_files(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": np.float32(0.5), "b": np.arange(3), "p": tmp_path})
    assert read_json(path) == {"a": 0.5, "b": [0, 1, 2], "p": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(ValueError):
        write_json(path, {"bad": float("nan")})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_provenance_records_how_a_result_was_made():
    record = provenance(seed=3, weights={"spec": "none"}, data_root="x", demo=True, extra_field=1)
    assert record["seed"] == 3 and record["demo_data"] is True and record["extra_field"] == 1
    assert record["weights"] == {"spec": "none"} and record["data_root"] == "x"
    assert record["git_commit"] and record["time_utc"].endswith("+00:00")
    assert set(record["versions"]) == {"python", "torch", "torchvision", "numpy"}


def test_provenance_records_the_command_it_is_given_else_this_process(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/opt/repo/run_all.py", "--demo"])
    assert provenance()["command"] == "run_all.py --demo"
    given = provenance(command=["/opt/repo/anomaly.py", "--out", "my results", "--category", "a;b"])
    assert given["command"] == "anomaly.py --out 'my results' --category 'a;b'"  # pastes back into a shell
    assert sys.argv == ["/opt/repo/run_all.py", "--demo"]


def test_unwritable_out_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write to --out"):
        ensure_writable_dir(tmp_path / "file" / "results")
    assert ensure_writable_dir(tmp_path / "new") == tmp_path / "new"


def test_atomic_write_takes_bytes_text_or_a_writer(tmp_path):
    from inspectkit.results import atomic_write

    assert atomic_write(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "sub" / "b.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    atomic_write(tmp_path / "c.npy", lambda fh: np.save(fh, np.arange(4)))
    assert np.load(tmp_path / "c.npy").tolist() == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "b.txt", "c.npy", "sub"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    from inspectkit.results import atomic_write

    path = atomic_write(tmp_path / "r.bin", b"old")

    def half_then_fail(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["r.bin"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    import os

    from inspectkit.results import atomic_write, current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = write_json(tmp_path / "r.json", {"a": 1})
        assert path.stat().st_mode & 0o777 == mode
        assert atomic_write(tmp_path / "b.bin", b"x").stat().st_mode & 0o777 == mode
    finally:
        os.umask(old)


def test_unwritable_targets_are_one_line_user_errors(tmp_path):
    from inspectkit.results import UnwritablePath, atomic_write

    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UnwritablePath, match=r"folder\.json: it is a folder"):
        write_json(tmp_path / "folder.json", {})
    (tmp_path / "afile").write_text("")
    with pytest.raises(UnwritablePath, match=r"cannot write .*afile/figures/x\.png: a parent of it is a file"):
        atomic_write(tmp_path / "afile" / "figures" / "x.png", b"")
    assert issubclass(UnwritablePath, UserError) and UnwritablePath.exit_code == 2


def test_concurrent_writers_of_one_path_never_share_a_temporary(tmp_path):
    import threading

    from inspectkit.results import atomic_write

    path, errors, started = tmp_path / "shared.bin", [], threading.Barrier(8)

    def writer(k):
        try:
            started.wait()
            for _ in range(20):
                atomic_write(path, lambda fh: fh.write(bytes([k]) * 1000))
        except Exception as exc:  # a shared temporary name shows as FileNotFoundError here
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = path.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1  # one writer's whole file, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    from inspectkit.results import sha256_file

    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()


# -- names that are not UTF-8, spreadsheet formulas, long names, outputs over inputs ---------------------------------

HOSTILE = ['=HYPERLINK("http://x.example","click").png', "+1+2.png", "-3+4.png", "@SUM(1+1).png", "\tx.png",
           "\rx.png", "'=quoted.png", "plain.png", os.fsdecode(b"caf\xe9.png")]


def test_json_and_text_hold_names_that_are_not_utf8_in_visible_form(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")
    path = write_json(tmp_path / "r.json", {"file": name, name: [tmp_path / name], "n": 1})
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8, and no lone surrogate escape for a strict reader to refuse
    assert b"\\ud" not in raw
    assert read_json(path) == {"file": "caf\\xe9.png", "caf\\xe9.png": [str(tmp_path / "caf\\xe9.png")], "n": 1}
    html = atomic_write(tmp_path / "page.html", f"<p>{name}</p>")
    assert html.read_text(encoding="utf-8") == "<p>caf\\xe9.png</p>"


def test_csv_cells_are_never_formulas_and_the_names_stay_recoverable(tmp_path):
    rows = [{"file": name, "score": score} for name, score in zip(HOSTILE, [-0.12, 3, -1e-5, 0.5, 1, 2, 0, 7, 9],
                                                                  strict=True)]
    path = write_csv(tmp_path / "p.csv", rows, ["file", "score"])
    with path.open(encoding="utf-8", newline="") as fh:  # as a spreadsheet reads it: every cell is text
        cells = list(csv.reader(fh))
    assert len(cells) == len(rows) + 1
    for row in cells[1:]:
        for cell in row:
            if cell.startswith(CSV_FORMULA_START):
                float(cell)  # only a number may start with - or +
    assert [float(row[1]) for row in cells[1:]] == [r["score"] for r in rows]  # numbers stay numbers
    recovered = [os.fsencode(original_text(csv_original(row[0]))) for row in cells[1:]]
    assert recovered == [os.fsencode(name) for name in HOSTILE]
    assert csv_cell(-0.12) == -0.12 and csv_cell(None) is None and csv_cell("x") == "x"


def test_a_name_as_long_as_the_file_system_allows_can_be_written(tmp_path):
    name = "n" * 250 + ".png"  # 254 bytes: the temporary name must not be longer
    path = atomic_write(tmp_path / name, b"x")
    assert path.read_bytes() == b"x" and [p.name for p in tmp_path.iterdir()] == [name]


def test_an_output_may_not_replace_a_file_the_command_reads(tmp_path):
    detector = tmp_path / "det.pt"
    detector.write_bytes(b"detector")
    (tmp_path / "sub").mkdir()
    (tmp_path / "hard.pt").hardlink_to(detector)
    (tmp_path / "link.pt").symlink_to(detector)
    reads = {detector: "the --load detector"}
    for spelling in (detector, tmp_path / "sub" / ".." / "det.pt", tmp_path / "hard.pt"):
        with pytest.raises(UserError, match=r"--export-file .* would replace the --load detector"):
            check_not_input(spelling, reads, "--export-file")
    with pytest.raises(UserError, match="would replace"):  # an input named through a link is still that file
        check_not_input(detector, {tmp_path / "link.pt": "the --load detector"}, "--export-file")
    check_not_input(tmp_path / "new.onnx", reads, "--export-file")  # nothing there yet
    check_not_input(tmp_path / "link.pt", reads, "--export-file")  # a write replaces the link, not its target
    atomic_write(tmp_path / "link.pt", b"onnx")
    assert detector.read_bytes() == b"detector"
    with pytest.raises(UserError, match="--csv"):
        check_output_file(detector, "--csv", [detector])
