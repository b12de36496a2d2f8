"""Time ``anomaly.py`` on one category with empty caches (cold) and again with full ones (warm), against the PNG
decode floor: the time to decode every image and mask of the category once, with Pillow, on all cores.

Prints floor, cold and warm seconds, cold / floor, (cold - warm) / floor (what a first run adds, mostly decoding:
1 when each file is decoded once on all cores), and the load average before and after (timings mean little on a
busy machine). Each anomaly.py run is its own process; the cold one starts from an empty cache folder, which the
warm one then reuses.

Examples:
    python -m bench.decode_bench --data-root /path/to/mvtec --category bottle --weights mobilenet_v2.pth
    python -m bench.decode_bench --data-root /path/to/mvtec --category bottle --weights mobilenet_v2.pth --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from inspectkit.cli import run, script_parser
from inspectkit.results import REPO_ROOT


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding the category folder")
    parser.add_argument("--category", default="bottle", help="category folder name")
    parser.add_argument("--weights", required=True, help="backbone weights file passed to anomaly.py")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="decoding threads for the floor")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the measurements to FILE")
    return parser


def category_images(folder: Path) -> list[Path]:
    """Every image and mask of the category (train, test, ground_truth)."""
    return sorted(p for split in ("train", "test", "ground_truth") for p in (folder / split).rglob("*.png"))


def decode_floor(files: list[Path], threads: int) -> float:
    """Seconds to decode every file once with Pillow on ``threads`` threads."""
    def decode(path: Path) -> None:
        with Image.open(path) as img:
            img.load()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(decode, files))
    return time.perf_counter() - start


def time_anomaly(args: argparse.Namespace, cache: Path, out: Path) -> float:
    """Wall seconds of one ``anomaly.py`` process using ``cache`` as its cache folder."""
    command = [sys.executable, str(REPO_ROOT / "anomaly.py"), "--category", args.category,
               "--data-root", args.data_root, "--weights", args.weights, "--out", str(out), "--no-figures"]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "INSPECTKIT_CACHE": str(cache)}, cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"anomaly.py failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main(args: argparse.Namespace) -> dict:
    files = category_images(Path(args.data_root) / args.category)
    load_before = os.getloadavg()
    floor = decode_floor(files, args.threads)
    with tempfile.TemporaryDirectory(prefix="decode_bench_") as scratch:
        cache, out = Path(scratch) / "cache", Path(scratch) / "out"
        cold = time_anomaly(args, cache, out)
        warm = time_anomaly(args, cache, out)
    result = {"category": args.category, "files": len(files), "threads": args.threads, "floor_s": round(floor, 2),
              "cold_s": round(cold, 2), "warm_s": round(warm, 2), "cold_over_floor": round(cold / floor, 2),
              "cold_minus_warm_over_floor": round((cold - warm) / floor, 2),
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"{args.category}: {len(files)} PNGs; floor {floor:.2f}s ({args.threads} threads), cold {cold:.2f}s, "
          f"warm {warm:.2f}s; cold/floor {cold / floor:.2f}x, (cold - warm)/floor {(cold - warm) / floor:.2f}x")
    print(f"load average before {result['load_before']}, after {result['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    run(main, get_args_parser())
