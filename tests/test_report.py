"""build_report.py and inspectkit/report.py on synthetic result JSON: page budget, numbers from data, missing inputs."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

import build_report
from inspectkit import report
from inspectkit.attempts import ATTEMPTS
from inspectkit.evaluation import compare
from inspectkit.metrics import classification_metrics, summarize_splits
from inspectkit.results import write_json

CLASSES = ["good", "broken_large", "broken_small", "contamination"]


def _figure(path, width, height, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _provenance(demo, weights="none"):
    return {"command": "test", "git_commit": "0" * 40, "time_utc": "2026-01-01T00:00:00+00:00", "seed": 0,
            "weights": {"spec": weights, "file": None, "sha256": None, "pretrained": weights != "none"},
            "data_root": "/data/mvtec", "demo_data": demo}


def _attempt(number, rng, accuracy, splits=3):
    """attempt_N.json as train.py writes it, from random predictions that are right with probability ``accuracy``."""
    per_split = []
    for seed in range(splits):
        y_true = rng.integers(0, len(CLASSES), 60)
        wrong = rng.random(60) > accuracy
        y_pred = np.where(wrong, (y_true + rng.integers(1, len(CLASSES), 60)) % len(CLASSES), y_true)
        per_split.append({"seed": seed, "test_metrics": classification_metrics(y_true, y_pred, CLASSES)})
    config = {**ATTEMPTS[number].to_dict(), "arch": "mobilenet_v2"}
    return {"attempt": number, "name": ATTEMPTS[number].name, "class_names": CLASSES, "config": config,
            "splits": per_split, "test": summarize_splits([s["test_metrics"] for s in per_split], CLASSES),
            "timing": {"wall_s": float(rng.uniform(50, 900))}}


def write_evaluation(folder, prov):
    """evaluation.json as evaluate.py writes it, from the attempt files in ``folder``."""
    attempts = [report.read_json(folder / f"attempt_{n}.json") for n in report.ATTEMPTS]
    reproduction = [{"attempt": a["attempt"], "equal": True, "max_abs_difference": {"macro_f1": 0.0}}
                    for a in attempts]
    write_json(folder / "evaluation.json", {**compare(attempts), "reproduction": reproduction,
                                            "provenance": prov})


def make_results(folder, *, seed=0, demo=True, category="bottle"):
    """A complete, plausible results folder (JSON and figures) whose numbers depend on ``seed``."""
    rng = np.random.default_rng(seed)
    prov = _provenance(demo)
    defects = {"broken_large": int(rng.integers(15, 25)), "broken_small": int(rng.integers(15, 25)),
               "contamination": int(rng.integers(15, 25))}
    train_good, test_good = int(rng.integers(150, 250)), int(rng.integers(15, 25))
    write_json(folder / f"stats_{category}.json", {
        "category": category, "defect_classes": sorted(defects), "num_defect_classes": 3,
        "counts": {"train": {"good": train_good}, "test": {"good": test_good, **defects}},
        "num_images": train_good + test_good + sum(defects.values()),
        "split": {"train": train_good, "test": test_good + sum(defects.values())},
        "image_sizes": [{"width": 900, "height": 900, "mode": "RGB", "count": 292}],
        "mask_area_fraction": {d: {"mean": float(rng.uniform(0.01, 0.1)), "min": 0.001, "max": 0.2}
                               for d in defects},
        "problems": [], "figures": {"counts": f"stats_{category}_counts.png"}, "provenance": prov})
    levels = sorted(rng.uniform(0.5, 0.98, 4))
    for n in report.ATTEMPTS:
        data = _attempt(n, rng, levels[n - 1])
        data["provenance"] = prov
        write_json(folder / f"attempt_{n}.json", data)
    write_evaluation(folder, prov)
    metrics = {"image_auroc": float(rng.uniform(0.9, 1)), "pixel_auroc": float(rng.uniform(0.9, 1)),
               "pro": float(rng.uniform(0.7, 0.95)), "f1_max": 0.9, "threshold": 1.0, "per_defect_image_auroc": {}}
    baseline = {"method": "PaDiM-like Gaussian per patch position (Mahalanobis), same features",
                **{k: v * 0.9 for k, v in metrics.items() if isinstance(v, float)}}
    write_json(folder / f"anomaly_{category}.json", {
        "metrics": metrics, "baseline": baseline,
        "config": {"arch": "mobilenet_v2", "layers": ["features.3", "features.6"], "image_size": 224,
                   "coreset_ratio": 0.01},
        "memory_bank": {"patches_before_coreset": 163856, "coreset_size": 1638},
        "timings": {"total_s": float(rng.uniform(5, 30))}, "peak_rss_mb": 900.0, "provenance": prov})
    instances = {d: n + int(rng.integers(0, 5)) for d, n in defects.items()}
    box_area = {"n": 60, "mean": float(rng.uniform(0.01, 0.1)), "min": 0.001, "median": 0.03, "max": 0.3}
    write_json(folder / f"export_{category}.json", {
        "class_names": sorted(defects),
        "images": {"with_instances": sum(defects.values()), "background": train_good + test_good,
                   "with_multiple_instances": int(rng.integers(1, 10))},
        "instances": {"total": sum(instances.values()), "per_class": instances},
        "box_size": {"all": {"area": box_area}},
        "polygon_iou": {"all": {"n": 60, "mean": float(rng.uniform(0.95, 0.99)), "min": 0.9}}, "provenance": prov})
    _figure(folder / "figures" / f"stats_{category}_counts.png", 900, 600, seed)
    _figure(folder / "figures" / f"anomaly_{category}.png", 1500, 400, seed)
    return folder


def _build(results, *extra):
    args = build_report.get_args_parser().parse_args(["--results", str(results), "--pdf", "--html", *extra])
    return build_report.main(args)


def _pdf_text(path):
    return " ".join(page.extract_text() for page in PdfReader(path).pages)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two reports from two different synthetic result sets."""
    out = []
    for seed in (1, 2):
        folder = make_results(tmp_path_factory.mktemp(f"results{seed}"), seed=seed)
        out.append((folder, _build(folder)))
    return out


def test_report_fits_three_pages(built):
    for folder, summary in built:
        assert summary["pages"] <= report.MAX_PAGES
        assert len(PdfReader(folder / "report.pdf").pages) == summary["pages"]
        assert (folder / "report.html").is_file()


def test_numbers_come_from_the_results(built):
    (folder1, _), (folder2, _) = built
    text1, text2 = _pdf_text(folder1 / "report.pdf"), _pdf_text(folder2 / "report.pdf")
    numbers = re.compile(r"\d+\.\d{3}")
    assert set(numbers.findall(text1)) != set(numbers.findall(text2))
    for folder, text in ((folder1, text1), (folder2, text2)):
        stats = report.read_json(folder / "stats_bottle.json")
        assert f"{stats['num_images']}" in text
        anomaly = report.read_json(folder / "anomaly_bottle.json")
        assert f"{anomaly['metrics']['image_auroc']:.3f}" in text


def test_best_attempt_is_computed(tmp_path):
    folder = make_results(tmp_path, seed=3)
    # make attempt 2 the clear winner, whatever the factory produced
    data = report.read_json(folder / "attempt_2.json")
    data["test"]["macro_f1"] = {"mean": 0.999, "std": 0.0, "values": [0.999] * len(data["splits"])}
    write_json(folder / "attempt_2.json", data)
    with pytest.raises(report.UserError, match=r"evaluation\.json is stale"):
        _build(folder)
    write_evaluation(folder, data["provenance"])
    _build(folder)
    html = " ".join((folder / "report.html").read_text().split())
    assert f"best attempt is <strong>2, {ATTEMPTS[2].name}</strong>" in html
    assert "attempt 2 improved (+" in html
    assert "attempt 3 worsened (−" in html
    assert "It clearly beats the baseline" in html


def test_demo_and_random_init_are_stated(built):
    folder, _ = built[0]
    text = " ".join(_pdf_text(folder / "report.pdf").split())
    assert "synthetic demo data" in text and "random-init weights" in text


def test_real_data_has_no_demo_banner(tmp_path):
    folder = make_results(tmp_path, seed=4, demo=False)
    _build(folder)
    html = (folder / "report.html").read_text()
    assert "synthetic demo data" not in html
    assert "PatchCore, WRN-50 (published)" in html


def test_word_counts_within_target(built):
    for _, summary in built:
        budget = report.word_budget(summary["word_counts"])
        assert set(budget) == set(report.WORD_TARGETS)
        for key, count in budget.items():
            assert count["ok"], f"{key}: {count['words']} words, target {count['target']}"


def test_count_words():
    assert report.count_words("Macro-F1 is 0.93 ± 0.02 — fine.") == 5
    html = '<div data-answer="q2"><p>one two <b>three</b></p></div><p>not counted</p><div data-answer="q4">x y</div>'
    assert report.word_counts(html) == {"q2": 3, "q4": 2}


def test_missing_results_exit_2_with_commands(tmp_path, capsys):
    folder = make_results(tmp_path, seed=5)
    (folder / "anomaly_bottle.json").unlink()
    (folder / "export_bottle.json").unlink()
    for n in report.ATTEMPTS:
        (folder / f"attempt_{n}.json").unlink()
    with pytest.raises(SystemExit) as exc:
        build_report.run(build_report.main, build_report.get_args_parser(), ["--results", str(folder), "--pdf"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"python anomaly.py --demo --out {folder}" in err
    assert f"python train.py --attempt all --demo --out {folder}" in err
    assert f"python export_labels.py --demo --results {folder}" in err  # its --out is the exported dataset
    assert not (folder / "report.pdf").exists()


def test_allow_missing_renders_placeholders(tmp_path):
    folder = make_results(tmp_path, seed=6)
    (folder / "export_bottle.json").unlink()
    summary = _build(folder, "--allow-missing")
    assert summary["pages"] <= report.MAX_PAGES
    text = " ".join(_pdf_text(folder / "report.pdf").split())
    assert "Placeholder: results missing" in text
    assert "python export_labels.py" in text


def test_category_is_found_or_asked_for(tmp_path):
    make_results(tmp_path, seed=7)
    assert report.find_category(tmp_path, None) == "bottle"
    make_results(tmp_path, seed=7, category="hazelnut")
    with pytest.raises(report.UserError, match="several categories"):
        report.find_category(tmp_path, None)
    with pytest.raises(report.UserError, match="does not exist"):
        report.collect_inputs(tmp_path / "nope")


def test_overflow_names_the_section(tmp_path, monkeypatch):
    folder = make_results(tmp_path, seed=8)
    monkeypatch.setattr(report, "MAX_PAGES", 1)
    monkeypatch.setattr(report, "FIGURE_SCALES", (0.5,))
    with pytest.raises(report.PageBudgetError, match=r"runs past page 1") as exc:
        _build(folder)
    assert re.search(r"Q\d", str(exc.value))
    assert not (folder / "report.pdf").exists()


def test_readme_block_is_replaced_from_the_json(tmp_path):
    folder = make_results(tmp_path / "results", seed=9)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{report.README_START}\nold numbers\n{report.README_END}\nrest\n")
    _build(folder, "--readme", str(readme))
    text = readme.read_text()
    assert "old numbers" not in text and text.endswith(f"{report.README_END}\nrest\n")
    f1 = report.read_json(folder / "attempt_4.json")["test"]["macro_f1"]
    assert f"{f1['mean']:.3f} ± {f1['std']:.3f}" in text
    readme.write_text("# no markers\n")
    with pytest.raises(report.UserError, match="results:start"):
        _build(folder, "--readme", str(readme))


def test_anomaly_without_baseline_or_masks(tmp_path):
    """anomaly.py --no-baseline, on a category without ground truth: no baseline row, pixel metrics n/a."""
    folder = make_results(tmp_path, seed=10)
    data = report.read_json(folder / "anomaly_bottle.json")
    data["baseline"] = None
    data["metrics"]["pixel_auroc"] = data["metrics"]["pro"] = None
    write_json(folder / "anomaly_bottle.json", data)
    _build(folder)
    html = " ".join((folder / "report.html").read_text().split())
    assert "PaDiM-like Gaussian per patch position</td>" not in html
    assert "pixel AUROC n/a and PRO n/a." in html


def test_result_with_unexpected_schema_is_a_clear_error(tmp_path):
    folder = make_results(tmp_path, seed=12)
    data = report.read_json(folder / "export_bottle.json")
    del data["instances"]
    write_json(folder / "export_bottle.json", data)
    with pytest.raises(report.UserError, match=r"export_bottle\.json .* re-run"):
        _build(folder)


def test_other_category_attempts_get_one_line(tmp_path):
    folder = make_results(tmp_path, seed=4)
    rng = np.random.default_rng(9)
    screw, partial = folder / "screw", folder / "half"
    for n in report.ATTEMPTS:
        write_json(screw / f"attempt_{n}.json", {**_attempt(n, rng, 0.3 + 0.15 * n), "category": "screw"})
    for n in (1, 2):  # an incomplete set is not shown
        write_json(partial / f"attempt_{n}.json", {**_attempt(n, rng, 0.5), "category": "grid"})
    _build(folder)
    html = " ".join((folder / "report.html").read_text().split())
    runs = [report.read_json(screw / f"attempt_{n}.json") for n in report.ATTEMPTS]
    best = max(runs, key=lambda r: r["test"]["macro_f1"]["mean"])["attempt"]
    values = ", ".join(f"attempt {r['attempt']} {r['test']['macro_f1']['mean']:.3f} "
                       f"± {r['test']['macro_f1']['std']:.3f}" for r in runs)
    assert f"The same protocol on screw (screw/): {values}; best {best}." in html
    step = [b - a for a, b in zip(runs[2]["test"]["macro_f1"]["values"], runs[3]["test"]["macro_f1"]["values"],
                                  strict=True)]
    assert f"On screw it {report.verdict({'mean': np.mean(step), 'std': np.std(step, ddof=1)})}" in html
    assert f"({np.mean(step):+.3f} ± ".replace("-", "−") in html
    assert "grid" not in html


def test_q3_says_whether_the_rarest_class_recall_moved(tmp_path):
    folder = make_results(tmp_path, seed=5)
    stats = report.read_json(folder / "stats_bottle.json")
    rarest = min(stats["defect_classes"], key=lambda c: stats["counts"]["test"][c])
    before = report.read_json(folder / "attempt_3.json")["test"]["per_class_recall"][rarest]["mean"]
    after = report.read_json(folder / "attempt_4.json")["test"]["per_class_recall"][rarest]["mean"]
    assert f"{before:.2f}" != f"{after:.2f}"  # the factory's random predictions differ
    _build(folder)
    html = " ".join((folder / "report.html").read_text().split())
    assert f"the rarest, {rarest}, went from {before:.2f} to {after:.2f}." in html
    data = report.read_json(folder / "attempt_4.json")
    data["test"]["per_class_recall"][rarest] = report.read_json(folder / "attempt_3.json")["test"][
        "per_class_recall"][rarest]
    write_json(folder / "attempt_4.json", data)
    _build(folder)
    html = " ".join((folder / "report.html").read_text().split())
    assert f"the rarest, {rarest}, stayed at {before:.2f}." in html


def test_names_that_are_not_utf8_reach_the_html_and_the_pdf_with_its_figures(tmp_path):
    """An author name typed in a Latin-1 terminal arrives as a lone surrogate (os.fsdecode of argv), which neither
    the HTML writer nor WeasyPrint could take; a results folder so named left the PDF without figures."""
    folder = make_results(tmp_path / os.fsdecode(b"r\xe9sultats"))
    summary = _build(folder, "--name", os.fsdecode(b"Jos\xe9 =1+1"))
    assert "Jos\\xe9 =1+1" in (folder / "report.html").read_bytes().decode("utf-8")
    assert "Jos\\xe9" in _pdf_text(summary["paths"]["pdf"])
    assert sum(len(page.images) for page in PdfReader(summary["paths"]["pdf"]).pages) >= 2
