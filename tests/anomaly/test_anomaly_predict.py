"""``anomaly.py --load FILE --images DIR``: verdicts at the good-only threshold, the normalised score, the largest
region's box in the file's own pixels, overlays, a recursive search that skips undecodable files, and the bad
inputs that exit 2 without writing anything."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inspectkit.anomaly.predict import largest_region_box
from inspectkit.results import CSV_FORMULA_START, csv_original, read_json
from tests.anomaly.test_anomaly_cli import FAST, call, exits_2


@pytest.fixture(scope="module")
def detector_file(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    call(["--data-root", synthetic_root, "--category", "demo", *FAST, "--no-baseline", "--no-figures", "--out", out])
    return out / "detectors" / "anomaly_demo_mobilenet_v2.pt"


@pytest.fixture
def photos(synthetic_root, tmp_path):
    """A nested folder: good and holed images in subfolders, one enlarged grey copy, and one broken file."""
    folder = tmp_path / "photos"
    shutil.copytree(synthetic_root / "demo" / "test" / "good", folder / "line1" / "good")
    shutil.copytree(synthetic_root / "demo" / "test" / "hole", folder / "line2" / "hole")
    Image.open(folder / "line2" / "hole" / "000.png").convert("L").resize((300, 200)).save(folder / "grey_wide.png")
    (folder / "line1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def test_predictions_csv_and_json(detector_file, photos, synthetic_root, tmp_path):
    out = tmp_path / "out"
    call(["--load", detector_file, "--images", photos, "--save-maps", "--out", out])
    result = read_json(out / "predictions_photos.json")
    rows = list(csv.DictReader((out / "predictions_photos.csv").open()))
    n_images = len(list(photos.rglob("*.png"))) - 1
    assert len(rows) == len(result["predictions"]) == n_images
    assert [s["file"] for s in result["skipped_files"]] == ["line1/broken.png"]
    by_file = {p["file"]: p for p in result["predictions"]}
    for p in result["predictions"]:  # the normalised score puts the threshold at 0.5
        assert (p["normalized_score"] >= 0.5) == (p["verdict"] == "defect") == (p["score"] >= result["image_threshold"])
    holes = [p for f, p in by_file.items() if f.startswith("line2/hole/")]
    assert all(p["verdict"] == "defect" for p in holes)
    for p in holes:  # the box lies on the ground-truth hole
        mask = np.asarray(Image.open(synthetic_root / "demo" / "ground_truth" / "hole" /
                                     p["file"].split("/")[-1].replace(".png", "_mask.png"))) > 0
        x0, y0, x1, y1 = p["bbox"]
        assert 0 <= x0 < x1 <= p["width"] and 0 <= y0 < y1 <= p["height"]
        assert mask[y0:y1, x0:x1].any()
    wide = by_file["grey_wide.png"]
    assert (wide["width"], wide["height"]) == (300, 200) and wide["verdict"] == "defect"
    assert wide["bbox"][2] > 128  # in the file's own pixels, not the detector's 128 px input
    overlays = sorted((out / "predictions_photos").glob("*.png"))
    assert len(overlays) == n_images and Image.open(overlays[0]).size == (128, 128)


def test_largest_region_box_picks_the_biggest_blob():
    amap = np.zeros((20, 30), dtype=np.float32)
    amap[2:4, 2:4] = 5.0  # 4 pixels
    amap[10:15, 20:28] = 3.0  # 40 pixels
    assert largest_region_box(amap, 2.0) == ((20, 10, 28, 15), 40)
    assert largest_region_box(amap, 9.0) == (None, 0)


def test_bad_detector_files_exit_2(detector_file, photos, tmp_path, capsys):
    state = torch.load(detector_file, weights_only=True)
    torch.save({**state, "version": 1}, tmp_path / "old.pt")
    exits_2(["--load", tmp_path / "old.pt", "--images", photos, "--out", tmp_path], capsys, "version 1")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    exits_2(["--load", tmp_path / "foreign.pt", "--images", photos, "--out", tmp_path], capsys, "not an inspectkit")
    torch.save({k: v for k, v in state.items() if k != "image_threshold"}, tmp_path / "cut.pt")
    exits_2(["--load", tmp_path / "cut.pt", "--images", photos, "--out", tmp_path], capsys, "damaged")
    torch.save({**state, "image_threshold": None}, tmp_path / "half.pt")
    exits_2(["--load", tmp_path / "half.pt", "--images", photos, "--out", tmp_path], capsys, "incomplete")
    torch.save({**state, "image_threshold": None, "pixel_threshold": None, "score_center": None}, tmp_path / "no.pt")
    exits_2(["--load", tmp_path / "no.pt", "--images", photos, "--out", tmp_path], capsys, "no threshold")
    (tmp_path / "truncated.pt").write_bytes(detector_file.read_bytes()[:2000])
    exits_2(["--load", tmp_path / "truncated.pt", "--images", photos, "--out", tmp_path], capsys, "cannot read")
    assert not list(tmp_path.glob("predictions_*"))


def test_bad_image_folders_exit_2(detector_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    exits_2(["--load", detector_file, "--images", photos / "grey_wide.png", "--out", out], capsys, "is a file")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    exits_2(["--load", detector_file, "--images", tmp_path / "empty", "--out", out], capsys, "no image files")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"nope")
    (tmp_path / "junk" / "b.jpg").write_bytes(b"")
    exits_2(["--load", detector_file, "--images", tmp_path / "junk", "--out", out], capsys, "none of the 2 images")
    assert not out.exists() or not list(out.glob("predictions_*"))


def test_export_to_an_unwritable_place_exits_2(detector_file, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    message = exits_2(["--load", detector_file, "--export", "onnx", "--export-file", blocker / "model.onnx"], capsys,
                      "the ONNX model's folder")
    assert "a_file" in message and not (blocker.parent / "model.onnx").exists()
    exits_2(["--export", "onnx"], capsys, "--export needs --load")


def test_export_writes_an_onnx_model_that_onnxruntime_scores_like_torch(detector_file, photos, tmp_path):
    import onnxruntime

    from inspectkit.anomaly import PatchCore
    from inspectkit.anomaly.predict import _decode

    target = tmp_path / "model.onnx"
    call(["--load", detector_file, "--export", "onnx", "--export-file", target])
    detector = PatchCore.load(detector_file)
    image, _ = _decode(photos / "grey_wide.png", detector.input_shape)
    batch = image.transpose(2, 0, 1)[None].copy()
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    anomaly_map, score = session.run(None, {"images": batch})
    torch_scores, torch_maps = detector.score(torch.from_numpy(batch))
    assert score[0] == pytest.approx(float(torch_scores[0]), rel=1e-4)
    assert np.abs(anomaly_map - torch_maps).max() <= 1e-3 * max(1.0, float(np.abs(torch_maps).max()))


# -- hostile and odd names, flags and files (issue 21) --------------------------------------------------------------

FORMULA_NAMES = ['=HYPERLINK("x.example","click").png', "+1+2.png", "-3+4.png", "@SUM(1+1).png", "\tx.png",
                 "\rcr.png"]


@pytest.fixture
def odd_photos(synthetic_root, tmp_path):
    """Good and holed images under names a spreadsheet runs as formulas, a Latin-1 name, and colliding names:
    x.png beside x.jpg, a/b.png beside a__b.png."""
    folder = tmp_path / "odd"
    (folder / "a").mkdir(parents=True)
    good, hole = synthetic_root / "demo" / "test" / "good", synthetic_root / "demo" / "test" / "hole"
    for i, name in enumerate(FORMULA_NAMES):
        shutil.copy((hole if i % 2 else good) / f"00{i % 4}.png", folder / name)
    shutil.copy(hole / "000.png", os.fsencode(folder) + b"/caf\xe9.png")
    shutil.copy(good / "000.png", folder / "x.png")
    Image.open(hole / "001.png").convert("RGB").save(folder / "x.jpg", quality=95)
    shutil.copy(good / "001.png", folder / "a" / "b.png")
    shutil.copy(hole / "002.png", folder / "a__b.png")
    return folder


def test_odd_names_are_scored_written_and_never_formulas(detector_file, odd_photos, tmp_path):
    out = tmp_path / "out"
    call(["--load", detector_file, "--images", odd_photos, "--save-maps", "--out", out])
    n_images = len(FORMULA_NAMES) + 5
    raw = (out / "predictions_odd.csv").read_bytes()
    raw.decode("utf-8")  # the Latin-1 name did not stop the writer
    with (out / "predictions_odd.csv").open(encoding="utf-8", newline="") as fh:
        cells = list(csv.reader(fh))  # a spreadsheet's view: text cells
    assert len(cells) == n_images + 1
    for row in cells[1:]:
        for cell in row:
            if cell.startswith(CSV_FORMULA_START):
                float(cell)  # only a number may start with - or +
    shown = {csv_original(row[0]) for row in cells[1:]}
    assert {*FORMULA_NAMES, "caf\\xe9.png", "x.png", "x.jpg", "a/b.png", "a__b.png"} == shown
    result = read_json(out / "predictions_odd.json")
    assert {p["file"] for p in result["predictions"]} == shown
    overlays = list((out / "predictions_odd").iterdir())  # one per image: none replaced another
    assert len(overlays) == len({p.name for p in overlays}) == n_images
    assert all(p.name.encode("utf-8") and "\t" not in p.name and "\r" not in p.name for p in overlays)


def test_flags_a_saved_detector_ignores_are_refused(detector_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    message = exits_2(["--load", detector_file, "--images", photos, "--false-alarm", "0.3", "--coreset-ratio", "0.5",
                       "--out", out], capsys, "do nothing with --load and --images")
    assert "--false-alarm" in message and "--coreset-ratio" in message
    exits_2(["--load", detector_file, "--export", "onnx", "--out", out], capsys, "--out does nothing with --export")
    exits_2(["--load", detector_file, "--images", photos, "--export-file", tmp_path / "m.onnx"], capsys,
            "--export-file does nothing")
    exits_2(["--save-maps", "--out", out], capsys, "--save-maps does nothing without --load")
    assert not out.exists()


def test_no_output_replaces_an_input(detector_file, photos, tmp_path, capsys):
    copy = tmp_path / "det.pt"
    shutil.copy(detector_file, copy)
    before = copy.read_bytes()
    exits_2(["--load", copy, "--export", "onnx", "--export-file", copy], capsys, "would replace the --load detector")
    exits_2(["--load", copy, "--export", "onnx", "--export-file", tmp_path / "." / "det.pt"], capsys,
            "would replace")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(detector_file, out / "predictions_photos.json")  # a detector file under the JSON's name
    exits_2(["--load", out / "predictions_photos.json", "--images", photos, "--out", out], capsys,
            "would replace the --load detector")
    exits_2(["--load", copy, "--images", photos, "--save-maps", "--out", photos], capsys, "inside the --images folder")
    assert copy.read_bytes() == before and (out / "predictions_photos.json").read_bytes() == before
    assert not (photos / "predictions_photos").exists() and not (out / "predictions_photos.csv").exists()


def test_a_detector_whose_bank_disagrees_with_its_features_is_refused_at_load(detector_file, photos, tmp_path,
                                                                             capsys):
    state = torch.load(detector_file, weights_only=True)
    narrow = tmp_path / "narrow.pt"
    torch.save({**state, "bank": state["bank"][:, :-5].clone()}, narrow)
    message = exits_2(["--load", narrow, "--images", photos, "--out", tmp_path / "out"], capsys, "memory bank")
    assert f"{state['bank'].shape[1] - 5}" in message and f"{state['bank'].shape[1]} wide" in message
    exits_2(["--load", narrow, "--export", "onnx", "--export-file", tmp_path / "new" / "m.onnx"], capsys,
            "memory bank")
    assert not (tmp_path / "out").exists() and not (tmp_path / "new").exists()
