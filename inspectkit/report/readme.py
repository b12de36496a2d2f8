"""The README's generated block: the results table (from the same context as the PDF) and a table of every file in
the results folder, saying what each holds and which command made it (read from its own provenance).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..anomaly_results import is_category_record
from ..errors import UserError
from ..results import REPO_ROOT, read_json
from .render import environment, write_atomic

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
# Folders under results/ that are never committed (see .gitignore): not listed.
UNLISTED_DIRS = frozenset({"checkpoints", "detectors", "demo"})
# What a file in the results folder holds, by name (first match wins; {c} is the category, {n} the attempt), and the
# script that makes it when the file carries no provenance of its own (figures, pages).
FILE_KINDS = (
    (r"stats_(?P<c>.+)\.json", "Q1: dataset statistics of {c} (counts, image sizes, defect areas)", ""),
    (r"splits_(?P<c>.+)\.json", "the stratified train/validation/test splits that every attempt on {c} uses", ""),
    (r"attempt_(?P<n>\d)\.json", "Q2, Q3: attempt {n}'s settings, per-split training curves, test metrics, timing",
     ""),
    (r"evaluation\.json", "Q2: the attempts compared, the best one, paired differences, the re-scoring check", ""),
    (r"anomaly_summary\.json", "Q4: every category's detector numbers in one table, derived from their "
                               "anomaly_<category>.json when written", "anomaly.py"),
    (r"anomaly_onnx_(?P<c>.+)\.json", "the ONNX export of the {c} detector: parity with PyTorch and latency", ""),
    (r"anomaly_guided_variants_(?P<c>.+)\.json", "variants of attempt 3's defect-type model on {c}, compared", ""),
    (r"anomaly_ablation\.json", "the detector's defaults, each switched off in turn", ""),
    (r"anomaly_bench\.json", "the detector against anomalib's PatchCore on the same images", ""),
    (r"anomaly_memory\.json", "peak memory of the detector on categories with many training and test images", ""),
    (r"anomaly_position\.json", "how the detector's score should depend on the position in the frame: every "
                                "scoring candidate on the real and synthetic categories, three seeds each", ""),
    (r"detector_speed_(?P<c>.+)\.json", "the {c} detector's time per phase against its floors (decoding, one "
                                        "backbone pass)", ""),
    (r"anomaly_predict_bench\.json", "time to score a folder of new images with a saved detector", ""),
    (r"anomaly_(?P<c>.+)\.html", "a static page with every {c} test image, its heat map, score and verdict",
     "anomaly.py"),
    (r"export_(?P<c>.+)\.json", "Q5: the exported YOLO/COCO/SAM labels of {c}, counted and checked", ""),
    (r"report\.pdf", "the report (at most three pages)", "build_report.py"),
    (r"report\.html", "the report as HTML, for preview", "build_report.py"),
    (r"report_provenance\.json", "how the report was made: its command, and each result file it read with that "
                                 "file's checksum and provenance", "build_report.py"),
    (r"figures/stats_(?P<c>.+)_counts\.png", "Q1 figure: images per class and split", "stats.py"),
    (r"figures/stats_(?P<c>.+)_samples\.png", "sample images of {c}, one per class", "stats.py"),
    (r"figures/anomaly_(?P<c>.+)_gallery\.png", "a screenshot of the {c} detector's page", "anomaly.py"),
    (r"figures/anomaly_(?P<c>.+)_hist\.png", "scores of good and defective {c} test images, with the threshold",
     "anomaly.py"),
    (r"figures/anomaly_(?P<c>.+)\.png", "Q4 figure: {c} anomaly maps with the ground truth outlined", "anomaly.py"),
    (r"figures/export_(?P<c>.+)_labels\.png", "Q5 figure: exported boxes and polygons of {c}", "build_report.py"),
    (r"figures/classification_confusion_matrix\.png", "the best attempt's confusion matrix", "evaluate.py"),
    (r"figures/classification_learning_curves\.png", "the best attempt's training curves", "evaluate.py"),
    (r"figures/classification_misclassified\.png", "the best attempt's misclassified test images", "evaluate.py"),
)


def describe_file(relative: str, data: object = None) -> tuple[str, str]:
    """What a file in the results folder holds and which script makes it (('', '') when its name is not known);
    ``relative`` uses '/'. The maker comes from the file's own provenance when it has one."""
    name = relative.rsplit("/", 1)[-1]
    maker = made_by(data)
    if is_category_record(data, name):
        return (f"Q4: the detector on {data['category']}: metrics, baseline, threshold and settings (the one source "
                "of these numbers)", maker)
    tail = relative.split("/", 1)[1] if "/" in relative and not relative.startswith("figures/") else relative
    for pattern, words, script in FILE_KINDS:
        match = re.fullmatch(pattern, tail)
        if match:
            return words.format(**match.groupdict()), maker or script
    return "", maker


def made_by(data: object) -> str:
    """The script that wrote a result JSON, from its provenance ('' without one): root scripts by name, bench
    scripts under bench/."""
    command = (data.get("provenance") or {}).get("command") if isinstance(data, dict) else None
    if not command:
        return ""
    script = command.split()[0]
    if not script.endswith(".py"):
        return ""  # made by a library call (a summary rebuilt from its sources): the kind's own script stands
    return f"bench/{script}" if (REPO_ROOT / "bench" / script).is_file() else script


def results_files(results_dir: str | os.PathLike) -> list[dict]:
    """Every file under the results folder (not the never-committed folders), with what it holds and its maker."""
    root = Path(results_dir)
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if set(relative.split("/")[:-1]) & UNLISTED_DIRS or path.suffix == ".tmp":
            continue
        data = None
        if path.suffix == ".json":
            try:
                data = read_json(path)
            except (OSError, ValueError):
                data = None
        sub = relative.split("/", 1)[0] if "/" in relative and not relative.startswith("figures/") else None
        what, maker = describe_file(relative, data)
        rows.append({"file": relative, "what": f"{what} ({sub})" if sub and what else what, "made_by": maker})
    return rows


def readme_results(context: Mapping, results_dir: str | os.PathLike) -> str:
    """The README's generated block (Markdown): the results and the file table, from the same context as the PDF."""
    return environment().get_template("readme_results.md.j2").render(
        **context, results_dir=str(results_dir), files=results_files(results_dir))


def update_readme(path: str | os.PathLike, block: str) -> Path:
    """Replace the text between README_START and README_END in ``path`` with ``block``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--readme {path} does not exist")
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(f"{path} has no '{README_START}' ... '{README_END}' block; add those two lines where the "
                        "results table should go")
    new = text[: start + len(README_START)] + "\n" + block.strip() + "\n" + text[end:]
    return write_atomic(path, new)
