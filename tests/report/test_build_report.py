"""build_report.py on synthetic result JSON, read back from the PDF as a grader reads it: the title block, numbers
from the data, no build-log material on the pages, word counts, the page budget, missing inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pypdf import PdfReader
from report_results import ATTEMPTS, _attempt, anomaly_record, make_results, write_evaluation

import build_report
from inspectkit import report
from inspectkit.errors import UserError
from inspectkit.report import render
from inspectkit.report.classification import verdict
from inspectkit.results import read_json, sha256_file, write_json

NAME, STUDENT_ID = "Ada Lovelace", "123456789"
PY = re.compile(r"\.py\b")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")  # hex with at least one letter: not a plain number
PATH = re.compile(r"[A-Za-z_.~]/|/[A-Za-z_.]|\\\\|\.(json|png|pt|pth|csv|html)\b")


def _build(results, *extra):
    args = build_report.get_args_parser().parse_args(["--results", str(results), "--pdf", "--html", *extra])
    return build_report.main(args)


def pdf_text(path):
    return " ".join(" ".join(page.extract_text() for page in PdfReader(path).pages).split())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two reports from two different synthetic result sets, with a name and ID."""
    out = []
    for seed in (1, 2):
        folder = make_results(tmp_path_factory.mktemp(f"results{seed}"), seed=seed)
        out.append((folder, _build(folder, "--name", NAME, "--student-id", STUDENT_ID)))
    return out


def test_report_fits_three_pages_and_records_its_provenance_beside_it(built):
    for folder, summary in built:
        assert summary["pages"] <= report.MAX_PAGES
        assert len(PdfReader(folder / "report.pdf").pages) == summary["pages"]
        record = read_json(folder / report.PROVENANCE_NAME)
        assert record["report"]["pages"] == summary["pages"]
        sources = {s["file"]: s for s in record["sources"]}
        for name in ("stats_bottle.json", "attempt_3.json", "evaluation.json", "anomaly_bottle.json"):
            assert sources[name]["sha256"] == sha256_file(folder / name)
            assert sources[name]["command"] == "test"  # the file's own provenance, copied
        assert {f["file"] for f in record["figures"]} == {"figures/stats_bottle_counts.png",
                                                           "figures/anomaly_bottle.png"}


def test_the_title_block_names_the_student_course_and_category(built, tmp_path):
    folder, _ = built[0]
    text = pdf_text(folder / "report.pdf")
    assert f"Name: {NAME}" in text and f"Student ID: {STUDENT_ID}" in text
    assert report.DEFAULT_COURSE in text and report.DEFAULT_HOMEWORK in text and "category bottle" in text
    other = make_results(tmp_path, seed=3)
    _build(other, "--course", "Machine Vision 101", "--homework", "Assignment 2")
    text = pdf_text(other / "report.pdf")
    assert "Machine Vision 101" in text and "Assignment 2" in text and report.DEFAULT_COURSE not in text
    assert "Name: Student ID:" in text  # blank lines to fill in


def test_no_script_names_commits_or_paths_on_the_pages(built):
    for folder, _ in built:
        text = pdf_text(folder / "report.pdf")
        assert not PY.search(text), PY.search(text)
        assert not COMMIT.search(text), COMMIT.search(text)
        assert not PATH.search(text), PATH.search(text)
        assert str(folder) not in text and "/data/mvtec" not in text
        assert "Words per answer" in text and "Provenance: in the file beside this PDF" in text  # the one-line footnote


def test_the_pattern_checks_catch_what_they_look_for():
    """The three checks above would fail on build-log material."""
    for bad, pattern in (("Built by build_report.py", PY), ("commit 9f19192291f0", COMMIT),
                         ("from results/anomaly_bottle.json", PATH), ("(screw/)", PATH)):
        assert pattern.search(bad), bad
    for fine in ("Student ID: 123456789", "lr head / backbone", "1e-03 / 2e-04", "page 1 of 3"):
        assert not (PY.search(fine) or COMMIT.search(fine) or PATH.search(fine)), fine


def test_numbers_come_from_the_results(built):
    (folder1, _), (folder2, _) = built
    text1, text2 = pdf_text(folder1 / "report.pdf"), pdf_text(folder2 / "report.pdf")
    numbers = re.compile(r"\d+\.\d{3}")
    assert set(numbers.findall(text1)) != set(numbers.findall(text2))
    for folder, text in ((folder1, text1), (folder2, text2)):
        stats = read_json(folder / "stats_bottle.json")
        assert f"{stats['num_images']}" in text
        anomaly = read_json(folder / "anomaly_bottle.json")
        assert f"{anomaly['metrics']['image_auroc']:.3f}" in text


def test_each_answer_is_within_its_word_budget_and_the_footnote_shows_the_counts(built):
    for folder, summary in built:
        counts = summary["word_counts"]
        html = (folder / "report.html").read_text()
        for key, target in report.WORD_TARGETS.items():
            # the answer's text (paragraphs apart, inline tags dropped) split on whitespace, as a word processor
            body = re.search(rf'data-answer="{key}">(.*?)</div>', html, re.S).group(1)
            plain = re.sub(r"<[^>]+>", "", re.sub(r"</?p\b[^>]*>", " ", body)).replace("&nbsp;", " ")
            assert counts[key] == len(plain.split()), key
            assert abs(counts[key] - target) <= report.WORD_TOLERANCE * target, f"{key}: {counts[key]} words"
        text = pdf_text(folder / "report.pdf")
        for key in report.WORD_TARGETS:
            assert f"{key.upper()} {counts[key]} ({report.WORD_TARGETS[key]})" in text


def test_numbers_keep_their_units_on_one_line(built):
    folder, _ = built[0]
    html = (folder / "report.html").read_text()
    breakable = "[ \t\n]+"  # a space at which a line may break (not the non-breaking one)
    assert re.search(rf"\d{breakable}%", html) is None and re.search(r"\d\u00a0%", html)  # "95 %" with a NBSP
    assert re.search(rf"\d{breakable}(s|px|GB)\b", html) is None and re.search(r"\d\u00a0s</td>", html)
    assert re.search(r"\d\u00a0±\u00a0\d", html)


def test_best_attempt_and_steps_are_computed(tmp_path):
    folder = make_results(tmp_path, seed=3)
    # make attempt 2 the clear winner, whatever the factory produced
    data = read_json(folder / "attempt_2.json")
    data["test"]["macro_f1"] = {"mean": 0.999, "std": 0.0, "values": [0.999] * len(data["splits"])}
    write_json(folder / "attempt_2.json", data)
    with pytest.raises(UserError, match=r"evaluation\.json is stale"):
        _build(folder)
    write_evaluation(folder, data["provenance"])
    _build(folder)
    html = " ".join((folder / "report.html").read_text().replace("&nbsp;", " ").replace("\u00a0", " ").split())
    assert f"The best is attempt 2, <strong>{ATTEMPTS[2].name.lower()}</strong>" in html
    assert re.search(r"attempt 2 \+\d\.\d{3} ± \d\.\d{3}, a clear gain", html)
    assert re.search(r"attempt 3 −\d\.\d{3} ± \d\.\d{3}, a clear loss", html)
    assert "clearly above the baseline" in html


def test_demo_and_random_init_are_stated(built):
    folder, _ = built[0]
    text = pdf_text(folder / "report.pdf")
    assert "synthetic demo data" in text and "random-init weights" in text
    assert "randomly initialised weights" in text


def test_real_data_has_no_demo_banner_and_cites_the_dataset(tmp_path):
    folder = make_results(tmp_path, seed=4, demo=False)
    _build(folder)
    text = pdf_text(folder / "report.pdf")
    assert "synthetic demo data" not in text
    assert "PatchCore, published" in text and "MVTec AD [1]" in text
    assert "MVTec AD: a comprehensive real-world dataset" in text  # in the reference list


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
    text = pdf_text(folder / "report.pdf")
    assert "Placeholder: results missing" in text
    assert "python export_labels.py" in text  # an incomplete build says how to complete it


def test_overflow_names_the_section(tmp_path, monkeypatch):
    folder = make_results(tmp_path, seed=8)
    monkeypatch.setattr(render, "MAX_PAGES", 1)
    monkeypatch.setattr(render, "SHRINK_STEPS", (0.5,))
    with pytest.raises(report.PageBudgetError, match=r"runs past page 1") as exc:
        _build(folder)
    assert re.search(r"Q\d", str(exc.value))
    assert not (folder / "report.pdf").exists()


def test_anomaly_without_baseline_or_masks(tmp_path):
    """anomaly.py --no-baseline, on a category without ground truth: no baseline column values, pixel metrics n/a."""
    folder = make_results(tmp_path, seed=10)
    data = read_json(folder / "anomaly_bottle.json")
    data["baseline"] = None
    data["metrics"]["pixel_auroc"] = data["metrics"]["pro"] = None
    write_json(folder / "anomaly_bottle.json", data)
    _build(folder)
    text = pdf_text(folder / "report.pdf")
    assert "pixel AUROC n/a and PRO n/a." in text
    assert "higher than the Gaussian baseline" not in text and "Baseline: none run" in text


def test_result_with_unexpected_schema_is_a_clear_error(tmp_path):
    folder = make_results(tmp_path, seed=12)
    data = read_json(folder / "export_bottle.json")
    del data["instances"]
    write_json(folder / "export_bottle.json", data)
    with pytest.raises(UserError, match=r"export_bottle\.json .* re-run"):
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
    text = pdf_text(folder / "report.pdf")
    runs = [read_json(screw / f"attempt_{n}.json") for n in report.ATTEMPTS]
    best = max(runs, key=lambda r: r["test"]["macro_f1"]["mean"])["attempt"]
    values = [f"{r['test']['macro_f1']['mean']:.3f}" for r in runs]
    assert (f"On screw, the same protocol gives macro-F1 {values[0]}, {values[1]}, {values[2]} and {values[3]} "
            f"for attempts 1–4 (best: {best}).") in text
    step = [b - a for a, b in zip(runs[2]["test"]["macro_f1"]["values"], runs[3]["test"]["macro_f1"]["values"],
                                  strict=True)]
    said = verdict({"mean": np.mean(step), "std": np.std(step, ddof=1)})
    mean = f"{np.mean(step):+.3f}".replace("-", "−")
    assert f"On screw it {said} macro-F1 ({mean} ±" in text
    assert "On grid" not in text and "grid," not in text


def test_q3_says_whether_the_rarest_class_recall_moved(tmp_path):
    folder = make_results(tmp_path, seed=5)
    stats = read_json(folder / "stats_bottle.json")
    rarest = min(stats["defect_classes"], key=lambda c: stats["counts"]["test"][c])
    before = read_json(folder / "attempt_3.json")["test"]["per_class_recall"][rarest]["mean"]
    after = read_json(folder / "attempt_4.json")["test"]["per_class_recall"][rarest]["mean"]
    assert f"{before:.2f}" != f"{after:.2f}"  # the factory's random predictions differ
    _build(folder)
    words = rarest.replace("_", " ")
    assert f"the rarest, {words}, went from {before:.2f} to {after:.2f}." in pdf_text(folder / "report.pdf")
    data = read_json(folder / "attempt_4.json")
    data["test"]["per_class_recall"][rarest] = read_json(folder / "attempt_3.json")["test"]["per_class_recall"][rarest]
    write_json(folder / "attempt_4.json", data)
    _build(folder)
    assert f"the rarest, {words}, stayed at {before:.2f}." in pdf_text(folder / "report.pdf")


def test_q4_reads_every_category_file_however_many_and_however_sparse(tmp_path):
    folder = make_results(tmp_path, seed=13, demo=False)
    rng = np.random.default_rng(13)
    screw = anomaly_record("screw", rng, read_json(folder / "anomaly_bottle.json")["provenance"])
    write_json(folder / "anomaly_screw.json", screw)
    # another dataset's category, from a later detector version: no baseline, masks, threshold or timings
    write_json(folder / "anomaly_kolektorsdd.json", {"category": "kolektorsdd", "config": {"arch": "mobilenet_v2"},
                                                     "metrics": {"image_auroc": 0.912}})
    write_json(folder / "anomaly_summary.json", {"categories": [{"category": "screw", "image_auroc": 0.5}]})
    _build(folder)
    text = pdf_text(folder / "report.pdf")
    assert f"screw {screw['counts']['test']['good'] + screw['counts']['test']['crack']} " \
           f"{screw['metrics']['image_auroc']:.3f}" in text
    assert re.search(r"kolektorsdd \[\d\] – 0\.912 n/a n/a n/a n/a n/a n/a", text)
    assert "0.500" not in text  # the summary is never read for numbers
    assert "same settings" not in text and "the rows differ in" in text
    assert "Segmentation-based deep-learning approach for surface-defect detection" in text  # its dataset, cited


def test_the_committed_report_is_built_from_the_committed_results():
    """results/report.pdf as committed: three pages, a grader's title block, nothing of the build log, pages
    filled; and every result file it read is unchanged since (else: rebuild it with build_report.py)."""
    from inspectkit.results import REPO_ROOT

    results = REPO_ROOT / "results"
    record = read_json(results / report.PROVENANCE_NAME)
    changed = [s["file"] for s in record["sources"] + record["figures"]
               if sha256_file(results / s["file"]) != s["sha256"]]
    assert changed == [], f"rebuild the report: {changed} changed since it was built"
    text = pdf_text(results / "report.pdf")
    assert len(PdfReader(results / "report.pdf").pages) == record["report"]["pages"] <= report.MAX_PAGES
    assert not (PY.search(text) or COMMIT.search(text) or PATH.search(text))
    assert all(blank <= report.MAX_BLANK for blank in record["report"]["blank_share_per_page"][:-1])
    for key, target in report.WORD_TARGETS.items():
        assert abs(record["report"]["words_per_answer"][key] - target) <= report.WORD_TOLERANCE * target, key


def test_names_that_are_not_utf8_reach_the_html_and_the_pdf_with_its_figures(tmp_path):
    """An author name typed in a Latin-1 terminal arrives as a lone surrogate (os.fsdecode of argv), which neither
    the HTML writer nor WeasyPrint could take; a results folder so named left the PDF without figures."""
    import os

    folder = make_results(tmp_path / os.fsdecode(b"r\xe9sultats"))
    summary = _build(folder, "--name", os.fsdecode(b"Jos\xe9 =1+1"))
    assert "Jos\\xe9 =1+1" in (folder / "report.html").read_bytes().decode("utf-8")
    assert "Jos\\xe9" in pdf_text(summary["paths"]["pdf"])
    assert sum(len(page.images) for page in PdfReader(summary["paths"]["pdf"]).pages) >= 2
