"""Time our PatchCore-style detector phase by phase against anomalib's PatchCore on the same images, with the same
backbone family (resnet18, layer2+layer3), image size and coreset ratio, on this machine; print the ratios.

anomalib lives only in a scratch virtualenv (bench/.venv-anomalib, git-ignored), never in requirements.txt:
    python -m venv --system-site-packages bench/.venv-anomalib
    bench/.venv-anomalib/bin/pip install anomalib==2.7.0
Both sides use random-init weights (anomalib cannot fetch timm weights offline; timing does not depend on them).
Each side runs in its own process; a coreset that outlives --coreset-limit-s is stopped and its time extrapolated
from the measured selection rate (marked "extrapolated"). Also measures, on the real bank, the covering radius of
our default (subsampled) coreset against exact greedy.

Examples:
    python bench/anomaly_bench.py --data-root ../data/mvtec --category bottle --ratios 0.01 0.1 \
        --coreset-limit-s 200 45 --radius-weights mobilenet_v2.pth
    python bench/anomaly_bench.py --demo --ratios 0.1 --coreset-limit-s 30
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspectkit.anomaly import PatchCore, PatchCoreConfig
from inspectkit.anomaly.coreset import covering_radius, project
from inspectkit.anomaly.metrics import image_auroc, pixel_auroc
from inspectkit.cache import DecodeCache
from inspectkit.cli import add_data_args, add_out_arg, data_root_of, resolve_category, run
from inspectkit.errors import UserError
from inspectkit.models import describe_weights
from inspectkit.results import provenance, write_json

HERE = Path(__file__).resolve().parent
PROGRESS = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.01, 0.1],
                        help="coreset ratios (default: 0.01 0.1)")
    parser.add_argument("--image-size", type=int, default=224, help="square image size for both (default: 224)")
    parser.add_argument("--coreset-limit-s", type=float, nargs="+", default=[120.0],
                        help="stop a coreset selection after this many seconds and extrapolate; one value, or one "
                             "per --ratios value (default: 120)")
    parser.add_argument("--anomalib-python", default=str(HERE / ".venv-anomalib" / "bin" / "python"),
                        help="python of the virtualenv that holds anomalib (default: bench/.venv-anomalib)")
    parser.add_argument("--skip-radius", action="store_true", help="skip the covering-radius comparison")
    parser.add_argument("--radius-arch", default="mobilenet_v2",
                        help="backbone for the covering-radius and AUROC comparison (default: mobilenet_v2)")
    parser.add_argument("--radius-weights", default="none",
                        help="weights for --radius-arch: imagenet, none or PATH (default: none)")
    parser.add_argument("--side", choices=["ours"], default=None, help=argparse.SUPPRESS)  # internal: one side
    parser.add_argument("--images", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ratio", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sampler", default=None, help=argparse.SUPPRESS)
    add_out_arg(parser)
    return parser


def ours_side(args: argparse.Namespace) -> None:
    """Our detector, same phases as anomalib_side.py; prints JSON lines like it."""
    data = np.load(args.images)
    to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    train, test = to_tensor(data["train"]), to_tensor(data["test"])
    timings = {}
    tick = time.perf_counter()
    config = PatchCoreConfig(arch="resnet18", image_size=train.shape[-1], coreset_ratio=args.ratio,
                             **({"sampler": args.sampler} if args.sampler else {}))
    detector = PatchCore.build(config, "none")
    timings["model"] = time.perf_counter() - tick
    tick = time.perf_counter()
    features = detector.extract(train, progress=False)
    timings["features_train"] = time.perf_counter() - tick
    bank = features.shape[0] * features.shape[2] * features.shape[3]
    print(json.dumps({"event": "coreset_start", "bank": bank, "features_train": timings["features_train"]}),
          flush=True)
    tick = time.perf_counter()
    detector.fit_features(features, progress=True)
    timings["coreset"] = time.perf_counter() - tick
    tick = time.perf_counter()
    test_features = detector.extract(test, progress=False)
    timings["features_test"] = time.perf_counter() - tick
    tick = time.perf_counter()
    detector.score_features(test_features)
    timings["scoring"] = time.perf_counter() - tick
    timings["features_and_scoring_test"] = timings["features_test"] + timings["scoring"]
    print(json.dumps({"event": "done", "sampler": config.sampler, "threads": torch.get_num_threads(),
                      "bank_before": bank, "coreset_size": len(detector.bank), "timings": timings}), flush=True)


def run_side(command: list[str], limit_s: float) -> dict:
    """Run one side; stop its coreset after ``limit_s`` and extrapolate from the last tqdm progress line."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict] = []
    stderr: list[str] = []

    def read_stdout():
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(json.loads(line))

    def read_stderr():
        while chunk := proc.stderr.read(256):
            stderr.append(chunk)

    readers = [threading.Thread(target=read_stdout), threading.Thread(target=read_stderr)]
    for reader in readers:
        reader.start()
    coreset_started = None
    stopped = False
    while proc.poll() is None:
        time.sleep(0.5)
        if coreset_started is None and any(e["event"] == "coreset_start" for e in events):
            coreset_started = time.perf_counter()
        if coreset_started is not None and time.perf_counter() - coreset_started > limit_s:
            proc.kill()
            stopped = True
    for reader in readers:
        reader.join()
    done = [e for e in events if e["event"] == "done"]
    if done:
        return {**done[0], "coreset_extrapolated": False}
    start = [e for e in events if e["event"] == "coreset_start"]
    matches = PROGRESS.findall("".join(stderr))
    if not (stopped and start and matches):
        raise RuntimeError(f"{command[:3]} failed:\n{''.join(stderr)[-2000:]}")
    picked, total, hours, minutes, seconds = matches[-1]
    elapsed = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    rate = int(picked) / max(elapsed, 1)
    return {"bank_before": start[0]["bank"], "coreset_size": int(total) + 1, "coreset_extrapolated": True,
            "coreset_points_per_s": rate, "coreset_measured": {"picked": int(picked), "seconds": elapsed},
            "timings": {"features_train": start[0]["features_train"], "coreset": int(total) / rate}}


def radius_check(args: argparse.Namespace, category, cache: DecodeCache, ratio: float) -> dict:
    """On the real bank: covering radius and AUROCs of our default (subsampled) coreset against exact greedy."""
    config = PatchCoreConfig(arch=args.radius_arch, image_size=args.image_size, coreset_ratio=ratio)
    detector = PatchCore.build(config, args.radius_weights)
    train, test = category.split_samples("train"), category.split_samples("test")

    def features(samples):
        images = np.stack([cache.image(s.path, args.image_size) for s in samples])
        return detector.extract(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), progress=False)

    train_features, test_features = features(train), features(test)
    masks = np.stack([cache.mask(s.mask_path, args.image_size) for s in test])
    patches = train_features.permute(0, 2, 3, 1).reshape(-1, train_features.shape[1]).numpy()
    points = project(patches, config.projection_dim, config.seed)
    out = {"arch": args.radius_arch, "weights": describe_weights(args.radius_weights), "bank": len(patches),
           "coreset_size": max(1, round(ratio * len(patches))), "projection_dim": config.projection_dim}
    for name in ("pruned_greedy", "subsample_greedy"):
        detector.config.sampler = name
        tick = time.perf_counter()
        detector.fit_features(train_features, progress=False)
        seconds = time.perf_counter() - tick
        chosen = detector.coreset_indices
        scores, maps = detector.score_features(test_features)
        out[name] = {"seconds": seconds, "covering_radius": covering_radius(points, chosen),
                     "image_auroc": image_auroc([s.is_defect for s in test], scores),
                     "pixel_auroc": pixel_auroc(masks, maps)}
    out["factor"] = out["subsample_greedy"]["covering_radius"] / out["pruned_greedy"]["covering_radius"]
    return out


def main(args: argparse.Namespace) -> dict:
    if args.side == "ours":
        ours_side(args)
        return {}
    if not Path(args.anomalib_python).is_file():
        raise UserError(f"no anomalib virtualenv at {args.anomalib_python}; create it as the docstring shows "
                        "(python -m venv --system-site-packages bench/.venv-anomalib && ... pip install anomalib)")
    category = resolve_category(args, progress=False)
    cache = DecodeCache()
    images = {split: np.stack([cache.image(s.path, args.image_size) for s in category.split_samples(split)])
              for split in ("train", "test")}
    results = {"category": category.name, "image_size": args.image_size, "backbone": "resnet18 layer2+layer3",
               "weights": "random init on both sides", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "images.npz"
        np.savez(npz, **images)
        limits = args.coreset_limit_s if len(args.coreset_limit_s) > 1 else args.coreset_limit_s * len(args.ratios)
        if len(limits) != len(args.ratios):
            raise UserError("--coreset-limit-s takes one value or one per --ratios value")
        for ratio, limit in zip(args.ratios, limits, strict=True):
            ours_cmd = [sys.executable, __file__, "--side", "ours", "--images", str(npz), "--ratio", str(ratio)]
            theirs_cmd = [args.anomalib_python, str(HERE / "anomalib_side.py"), "--images", str(npz),
                          "--ratio", str(ratio)]
            print(f"ratio {ratio}: ours ...", flush=True)
            ours = run_side(ours_cmd, limit)
            print(f"ratio {ratio}: anomalib ...", flush=True)
            theirs = run_side(theirs_cmd, limit)
            results["runs"].append({"ratio": ratio, "coreset_limit_s": limit, "ours": ours, "anomalib": theirs,
                                    "coreset_speedup": theirs["timings"]["coreset"] / ours["timings"]["coreset"]})
            print_run(results["runs"][-1])
    if not args.skip_radius:
        results["radius"] = r = radius_check(args, category, cache, min(args.ratios))
        for name in ("pruned_greedy", "subsample_greedy"):
            print(f"{args.radius_arch} {min(args.ratios)} {name}: covering radius {r[name]['covering_radius']:.3f}, "
                  f"{r[name]['seconds']:.1f}s, image AUROC {r[name]['image_auroc']:.4f}, "
                  f"pixel AUROC {r[name]['pixel_auroc']:.4f}")
        print(f"covering-radius factor (subsample / exact greedy): {r['factor']:.2f}")
    results["provenance"] = provenance(seed=0, weights={"spec": "none"}, data_root=data_root_of(category),
                                       demo=category.demo)
    path = write_json(Path(args.out) / f"anomaly_bench_{category.name}.json", results)
    print(f"wrote {path}")
    return results


def print_run(entry: dict) -> None:
    for side in ("ours", "anomalib"):
        t = entry[side]["timings"]
        mark = " (extrapolated)" if entry[side]["coreset_extrapolated"] else ""
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "coreset")
        print(f"  {side:8s} coreset {t['coreset']:.1f}s{mark}; {phases}")
    print(f"  coreset: ours is {entry['coreset_speedup']:.0f}x faster than anomalib at ratio {entry['ratio']}")


if __name__ == "__main__":
    run(main, get_args_parser())
