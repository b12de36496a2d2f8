"""Peak memory of the detector against the number of training images: a synthetic category with N good images at
the default size, fitted and scored by the library pipeline (run_detection), one process per N.

The target is peak RSS <= 3 GB for 1,500 training images at the default size, and a peak that grows with the
grid, not with N. Random-init weights: memory does not depend on them. Writes results/anomaly_memory.json.

Examples:
    python bench/anomaly_memory.py                       # N = 100, 500 and 1500 at 320 x 320
    python bench/anomaly_memory.py --train 200 --size 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ONE_RUN = """
import json, sys
from inspectkit.anomaly import PatchCoreConfig
from inspectkit.anomaly.pipeline import run_detection
from inspectkit.data import load_category
category = load_category(sys.argv[1], "many", progress=False)
record, _ = run_detection(category, PatchCoreConfig(), "none", progress=False, figures=False)
print(json.dumps({"peak_rss_mb": record["peak_rss_mb"], "seconds": record["timings"]["wall_s"],
                  "pool_size": record["memory_bank"]["pool_size"], "bank": record["memory_bank"]["coreset_size"],
                  "input_shape": record["config"]["input_shape"]}))
"""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", type=int, nargs="+", default=[100, 500, 1500], help="training-set sizes")
    parser.add_argument("--size", type=int, default=320, help="side of the synthetic square images")
    parser.add_argument("--out", default=str(ROOT / "results"), help="folder for anomaly_memory.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    from inspectkit.results import provenance, write_json
    from inspectkit.synthetic import make_category

    rows = []
    for n in args.train:
        with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as cache:
            make_category(root, "many", image_size=args.size, n_train=n, n_test_good=10, n_per_defect=5, seed=0)
            done = subprocess.run([sys.executable, "-c", ONE_RUN, root], capture_output=True, text=True, check=True,
                                  cwd=ROOT, env={**__import__("os").environ, "INSPECTKIT_CACHE": cache})
            row = {"train_images": n, **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(row, flush=True)
    result = {"rows": rows, "image_size": args.size, "target_mb": 3072,
              "note": "synthetic images, random-init weights, default PatchCoreConfig; peak RSS of the process "
                      "sampled every 20 ms while run_detection ran (inspectkit.anomaly.memory.PeakMemory)",
              "provenance": provenance(seed=0, weights={"spec": "none"})}
    write_json(Path(args.out) / "anomaly_memory.json", result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
