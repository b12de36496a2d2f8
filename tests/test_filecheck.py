"""inspectkit/filecheck.py: one image and its mask checked by decoding them, what the memo remembers (and what it
does not), and native sizes read from headers."""

from __future__ import annotations

import numpy as np
from helpers import count_decodes
from PIL import Image

from inspectkit.filecheck import CheckMemo, check_files, native_sizes, needs_decode


def _files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    image, mask, broken = folder / "img.png", folder / "img_mask.png", folder / "broken.png"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(image)
    grey = np.zeros((20, 30), np.uint8)
    grey[:5, :6] = 255
    Image.fromarray(grey).save(mask)
    broken.write_bytes(b"\x89PNG not really")
    return image, mask, broken


def test_an_image_and_its_mask_are_measured_and_remembered(tmp_path, monkeypatch):
    image, mask, _ = _files(tmp_path / "files")
    decodes = count_decodes(monkeypatch)
    memo = CheckMemo()
    assert needs_decode(image, mask, memo)
    image_record, mask_record = check_files(image, mask, memo, prewarm=None)
    assert image_record == {"width": 30, "height": 20, "mode": "RGB"}
    assert mask_record["fraction"] == 30 / 600 and mask_record["binary"] and mask_record["levels"] == 2
    memo.save()
    again = CheckMemo()  # read back from the cache folder, as the next run does
    assert not needs_decode(image, mask, again)
    assert check_files(image, mask, again, prewarm=None) == (image_record, mask_record)
    assert decodes[image] == 1 and decodes[mask] == 1  # the second check decoded nothing
    assert native_sizes([image], again) == [(30, 20)]


def test_a_broken_image_is_an_error_and_its_mask_is_not_read(tmp_path, monkeypatch):
    _, mask, broken = _files(tmp_path / "files")
    decodes = count_decodes(monkeypatch)
    image_record, mask_record = check_files(broken, mask, CheckMemo(enabled=False), prewarm=None)
    assert set(image_record) == {"error"} and mask_record is None and decodes[mask] == 0
    assert native_sizes([broken], CheckMemo(enabled=False)) == []


def test_a_vanished_file_is_reported_not_raised(tmp_path):
    missing = tmp_path / "gone.png"
    record, _ = check_files(missing, None, CheckMemo(), prewarm=None)
    assert record["error"].startswith("cannot read")
    assert not needs_decode(missing, None, CheckMemo())  # the check reports it without decoding
