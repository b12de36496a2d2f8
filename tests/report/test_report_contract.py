"""The report reads what the producers write: stats, train, evaluate and export_labels run in-process on the
synthetic category, and build_report renders their own JSON, with their numbers, and Q5's figure from the export
files (anomaly.py is left out: its section is a placeholder, --allow-missing)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import pytest
from helpers import run_script

import build_report
import evaluate
import export_labels
import stats
import train
from inspectkit.cli import run
from inspectkit.figures.export import read_coco, read_yolo

FAST = ["--image-size", "64", "--epochs", "1", "--splits", "2", "--arch", "mobilenet_v2", "--weights", "none"]


@pytest.fixture(scope="module")
def produced(synthetic_root, tmp_path_factory):
    """(results folder, export folder) as the four producer scripts write them."""
    base = tmp_path_factory.mktemp("contract")
    results, exports = base / "results", base / "exports" / "demo"
    data = ["--category", "demo", "--data-root", str(synthetic_root)]
    steps = [(stats, [*data, "--out", str(results)]),
             (train, ["--attempt", "all", *data, *FAST, "--out", str(results)]),
             (evaluate, [*data, "--out", str(results)]),
             (export_labels, [*data, "--results", str(results), "--out", str(exports), "--no-progress"])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSPECTKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for script, argv in steps:
            run(script.main, script.get_args_parser(), argv)
    return results, exports


def _read(folder, name):
    return json.loads((folder / name).read_text())


def _build(results, capsys):
    code, stdout, stderr = run_script(build_report, ["--results", str(results), "--html", "--pdf",
                                                     "--allow-missing"], capsys)
    assert code == 0, stderr
    html = (results / "report.html").read_text()
    return stdout, html, " ".join(re.sub(r"<[^>]+>", " ", html).split())  # the HTML as text


def test_the_report_shows_the_producers_numbers(produced, synthetic_root, capsys):
    results, _ = produced
    stdout, html, text = _build(results, capsys)
    assert "page(s) of at most 3" in stdout

    stats_json = _read(results, "stats_demo.json")
    assert f"{stats_json['num_images']} images" in text
    for n in (1, 2, 3, 4):
        f1 = _read(results, f"attempt_{n}.json")["test"]["macro_f1"]
        assert f"{f1['mean']:.3f} ± {f1['std']:.3f}" in text, n
    best = _read(results, "evaluation.json")["best"]
    assert f"attempt {best['attempt']}" in text

    export = _read(results, "export_demo.json")
    per_class = ", ".join(f"{cls} {n}" for cls, n in export["instances"]["per_class"].items())
    assert f"{export['instances']['total']} instances ({per_class})" in text
    assert f"IoU {export['polygon_iou']['all']['mean']:.3f} on average" in text

    answered = re.sub(r'<div class="placeholder">.*?</div>', "", html, flags=re.S)  # Q4's says how to make it
    assert str(synthetic_root) not in answered  # the data's path goes to the provenance record, not the page
    record = _read(results, "report_provenance.json")
    assert record["data"]["root_name"] == synthetic_root.name
    assert {s["file"] for s in record["sources"]} >= {"stats_demo.json", "evaluation.json", "export_demo.json"}


def test_q5_figure_is_drawn_from_the_export_files(produced, capsys):
    results, exports = produced
    stdout, html, _ = _build(results, capsys)
    figure = results / "figures" / "export_demo_labels.png"
    assert f"Q5 figure drawn from {exports} (coco)" in stdout
    assert figure.stat().st_size > 5000 and 'src="figures/export_demo_labels.png"' in html


def test_the_export_files_read_back_hold_the_exported_instances(produced):
    """What the figure draws is what the export summary counts, from COCO and from YOLO alike."""
    results, exports = produced
    per_class = _read(results, "export_demo.json")["instances"]["per_class"]
    coco, yolo = read_coco(exports / "coco"), read_yolo(exports / "yolo", exports / "yolo-seg")
    for images in (coco, yolo):
        assert Counter(label for im in images for label in im.labels) == Counter(per_class)
        assert all(len(im.labels) == len(im.boxes) == len(im.polygons) for im in images)
    by_name = {im.path.name: im for im in yolo}
    for im in coco:  # YOLO's normalised boxes give back COCO's pixel boxes, and both have polygons
        other = by_name[im.path.name]
        for box, yolo_box in zip(im.boxes, other.boxes, strict=True):
            assert box == pytest.approx(yolo_box, abs=0.01)
        assert all(rings and len(rings[0]) >= 6 for rings in im.polygons + other.polygons)


def test_without_the_export_files_the_report_keeps_or_notes_the_figure(produced, tmp_path, capsys):
    """A fresh clone has results/ but not exports/: the figure drawn earlier stays, and without it a note."""
    results, _ = produced
    _build(results, capsys)  # draws the figure
    clone = tmp_path / "results"
    shutil.copytree(results, clone)
    export = _read(clone, "export_demo.json")
    rerun = {**export["provenance"], "time_utc": "2030-01-01T00:00:00+00:00"}  # the folder holds an older export
    (clone / "export_demo.json").write_text(json.dumps({**export, "provenance": rerun}))
    stdout, html, _ = _build(clone, capsys)
    assert "Q5 figure kept as drawn earlier" in stdout and "holds another export" in stdout
    assert 'src="figures/export_demo_labels.png"' in html

    (clone / "export_demo.json").write_text(json.dumps({**export, "out": str(tmp_path / "exports" / "demo")}))
    stdout, html, _ = _build(clone, capsys)
    assert "Q5 figure kept as drawn earlier" in stdout and "is not on this machine" in stdout
    assert 'src="figures/export_demo_labels.png"' in html

    (clone / "figures" / "export_demo_labels.png").unlink()
    stdout, html, text = _build(clone, capsys)
    assert "Q5 figure left out" in stdout and "export_demo_labels.png" not in html
    assert "No figure of the exported labels" in text and "python export_labels.py" not in text
    assert "To draw it, run `python export_labels.py" in stdout  # the command goes to the builder, not the page
    assert build_report.main(build_report.get_args_parser().parse_args(
        ["--results", str(clone), "--allow-missing"]))["pages"] <= 3
