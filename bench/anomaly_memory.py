"""Peak memory of the detector against the size of a category: synthetic categories with many training images,
and one with many test images and masks too, fitted, scored and measured by the library pipeline (run_detection),
one process per case.

The target is peak RSS <= 3 GB for 1,500 training and 600 test images at the default size, and a peak that grows
with the grid, not with the number of images (the pixel metrics keep histograms, not the pixels). Random-init
weights: memory does not depend on them. Writes results/anomaly_memory.json.

Examples:
    python -m bench.anomaly_memory                                # every case below
    python -m bench.anomaly_memory --cases train500 train1500_test600
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from inspectkit.cli import run, script_parser
from inspectkit.results import REPO_ROOT

ONE_RUN = """
import json, sys
from inspectkit.anomaly import PatchCoreConfig
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.data import load_category
category = load_category(sys.argv[1], "many", progress=False)
record, _ = run_detection(category, PatchCoreConfig(), "none", progress=False, figures=False)
print(json.dumps({"peak_rss_mb": record["peak_rss_mb"], "seconds": record["timings"]["wall_s"],
                  "test_images": sum(record["counts"]["test"].values()), "timings": record["timings"],
                  "pool_size": record["memory_bank"]["pool_size"], "bank": record["memory_bank"]["coreset_size"],
                  "input_shape": record["config"]["input_shape"]}))
"""


CASES = {  # name -> make_category arguments
    "train100": {"n_train": 100, "image_size": 320, "n_test_good": 10, "n_per_defect": 5},
    "train500": {"n_train": 500, "image_size": 320, "n_test_good": 10, "n_per_defect": 5},
    "train1500": {"n_train": 1500, "image_size": 320, "n_test_good": 10, "n_per_defect": 5},
    # the test set seen at scale: 600 images of 350 x 290 with masks (60 M pixels in the pixel metrics)
    "train1500_test600": {"n_train": 1500, "width": 350, "height": 290, "n_test_good": 150, "n_per_defect": 150},
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES),
                        help="categories to measure (make_category arguments in CASES)")
    parser.add_argument("--out", default="results", help="folder for anomaly_memory.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    from inspectkit.results import provenance, write_json
    from inspectkit.synthetic import make_category

    rows = []
    for name in args.cases:
        case = CASES[name]
        with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as cache:
            make_category(root, "many", seed=0, **case)
            done = subprocess.run([sys.executable, "-c", ONE_RUN, root], capture_output=True, text=True, check=True,
                                  cwd=REPO_ROOT, env={**__import__("os").environ, "INSPECTKIT_CACHE": cache})
            row = {"case": name, "train_images": case["n_train"], "category": case,
                   **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(row, flush=True)
    run = provenance(seed=0, weights={"spec": "none"})
    for row in rows:
        row["provenance"] = {k: run[k] for k in ("command", "git_commit", "time_utc")}
    rows = _kept_rows(Path(args.out) / "anomaly_memory.json", {r["case"] for r in rows}) + rows
    result = {"rows": rows, "target_mb": 3072,
              "note": "synthetic images, random-init weights, default PatchCoreConfig; peak RSS of the process "
                      "sampled every 20 ms while run_detection ran (inspectkit.anomaly.memory.PeakMemory)",
              "provenance": run}
    write_json(Path(args.out) / "anomaly_memory.json", result)
    return result


def _kept_rows(path: Path, measured: set[str]) -> list[dict]:
    """The rows of an earlier results file for the cases this run did not measure, each with the provenance of
    the run that measured it (rows written before rows carried one get that file's)."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    kept = []
    for row in earlier.get("rows", []):
        case = row.get("case", f"train{row.get('train_images')}")
        if case not in measured:
            kept.append({"case": case, **row, "provenance": row.get("provenance") or {
                k: earlier["provenance"].get(k) for k in ("command", "git_commit", "time_utc")}})
    return kept


if __name__ == "__main__":
    run(main, get_args_parser())
