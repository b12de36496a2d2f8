"""Check an export_labels.py export with Ultralytics' own dataset checks, for detect (yolo/) and segment (yolo-seg/).

Ultralytics is not a project dependency: this script installs it into a scratch virtualenv (bench/.venv-ultralytics,
git-ignored) that reuses the system torch, then re-runs itself there. Per task it runs
``ultralytics.data.utils.check_det_dataset`` on dataset.yaml, ``verify_image_label`` on every image and label
file, and builds Ultralytics' dataset to load one labelled sample of each part.

Examples:
    python export_labels.py --category bottle --data-root ../shared/data/mvtec --out exports/bottle
    python -m bench.ultralytics_check --export exports/bottle          # writes exports/bottle/ultralytics_check.json
    python -m bench.ultralytics_check --export exports/demo --json /tmp/check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import venv
from pathlib import Path

from inspectkit.cli import run, script_parser
from inspectkit.errors import UserError
from inspectkit.results import REPO_ROOT

VENV = REPO_ROOT / "bench" / ".venv-ultralytics"
# The versions this check was written against; --no-deps keeps pip from pulling a second torch.
PACKAGES = ("ultralytics==8.4.190", "opencv-python-headless==5.0.0.93")
TASKS = {"yolo": "detect", "yolo-seg": "segment"}
PARTS = ("train", "val", "test")


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    parser.add_argument("--export", required=True, help="export folder holding yolo/ and/or yolo-seg/")
    parser.add_argument("--json", default=None, help="where to write the check results "
                                                     "(default: <export>/ultralytics_check.json)")
    parser.add_argument("--venv", default=str(VENV), help=f"scratch virtualenv for ultralytics (default: {VENV})")
    parser.add_argument("--inside", action="store_true", help="internal: already running in the virtualenv")
    return parser


def ensure_venv(folder: Path) -> Path:
    """Create the virtualenv (with the system packages visible) and install ultralytics without its dependencies."""
    python = folder / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(system_site_packages=True, with_pip=True).create(folder)
    probe = subprocess.run([python, "-c", "import ultralytics, cv2"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *PACKAGES], check=True)
    return python


def verify_labels(data: dict, task: str) -> dict:
    """Ultralytics' per-file label verification on every image of each part."""
    from ultralytics.data.utils import img2label_paths, verify_image_label

    report = {}
    for part in PARTS:
        if not data.get(part):
            continue
        images = sorted(str(p) for p in Path(data[part]).iterdir())
        counts = {"images": len(images), "missing": 0, "found": 0, "empty": 0, "corrupt": 0, "boxes": 0,
                  "segments": 0, "messages": []}
        for image, label in zip(images, img2label_paths(images), strict=True):
            result = verify_image_label((image, label, "", False, data["nc"], 0, 0, False))
            _, labels, _, segments, _, missing, found, empty, corrupt, message = result
            for key, value in zip(("missing", "found", "empty", "corrupt"), (missing, found, empty, corrupt),
                                  strict=True):
                counts[key] += value
            counts["boxes"] += 0 if labels is None else len(labels)
            counts["segments"] += len(segments or [])
            if message:
                counts["messages"].append(message)
        if task == "segment" and counts["segments"] != counts["boxes"]:
            counts["messages"].append(f"{counts['boxes'] - counts['segments']} rows were not read as polygons")
        report[part] = counts
    return report


def load_samples(data: dict, task: str) -> dict:
    """Build Ultralytics' dataset per part (as its validator does, no augmentation) and load one labelled sample."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.utils import DEFAULT_CFG

    cfg = get_cfg(DEFAULT_CFG, {"task": task, "imgsz": 640, "workers": 0})
    loaded = {}
    for part in PARTS:
        if not data.get(part):
            continue
        dataset = build_yolo_dataset(cfg, data[part], batch=4, data=data, mode="val")
        index = next(i for i, label in enumerate(dataset.labels) if len(label["cls"]))
        sample = dataset[index]
        loaded[part] = {"labels": len(dataset.labels),
                        "instances": int(sum(len(label["cls"]) for label in dataset.labels)),
                        "sample_image_shape": list(sample["img"].shape),
                        "sample_boxes": len(sample["bboxes"]),
                        "sample_boxes_equal_labels": len(sample["bboxes"]) == len(dataset.labels[index]["cls"]),
                        **({"sample_masks_shape": list(sample["masks"].shape)} if task == "segment" else {})}
    return loaded


def check_export(export: Path) -> dict:
    """Every check, per task present in the export."""
    import ultralytics
    from ultralytics.data.utils import check_det_dataset

    results = {"ultralytics": ultralytics.__version__, "export": str(export), "tasks": {}}
    for folder, task in TASKS.items():
        yaml_path = export / folder / "dataset.yaml"
        if not yaml_path.is_file():
            continue
        data = check_det_dataset(str(yaml_path))
        verified = verify_labels(data, task)
        results["tasks"][task] = {
            "dataset_yaml": str(yaml_path),
            "check_det_dataset": {"nc": data["nc"], "names": data["names"],
                                  **{part: data[part] for part in PARTS if data.get(part)}},
            "verify_image_label": verified,
            "dataset_samples": load_samples(data, task),
            "ok": all(v["corrupt"] == 0 and v["missing"] == 0 and not v["messages"] for v in verified.values()),
        }
    return results


def main(args: argparse.Namespace) -> None:
    export = Path(args.export).resolve()
    if not any((export / folder / "dataset.yaml").is_file() for folder in TASKS):
        raise UserError(f"{export} has no yolo/dataset.yaml or yolo-seg/dataset.yaml; run export_labels.py "
                        "with --format yolo yolo-seg first")
    if not args.inside:
        python = ensure_venv(Path(args.venv))
        env = {**os.environ, "YOLO_CONFIG_DIR": str(Path(args.venv) / "config")}
        command = [str(python), "-m", "bench.ultralytics_check", "--inside", "--export", str(export)]
        command += ["--json", args.json] if args.json else []
        raise SystemExit(subprocess.run(command, env=env, cwd=REPO_ROOT).returncode)

    from inspectkit.results import provenance, write_json

    results = check_export(export)
    results["provenance"] = provenance(data_root=str(export))
    path = write_json(args.json or export / "ultralytics_check.json", results)
    for task, result in results["tasks"].items():
        parts = ", ".join(f"{part}: {v['images']} images, {v['found']} label files, {v['empty']} empty, "
                          f"{v['corrupt']} corrupt, {v['missing']} missing, {v['boxes']} instances"
                          for part, v in result["verify_image_label"].items())
        print(f"{task}: {'OK' if result['ok'] else 'PROBLEMS'} ({parts})")
    print(f"ultralytics {results['ultralytics']}; details in {path}")
    print(json.dumps({task: r["dataset_samples"] for task, r in results["tasks"].items()}))
    if not all(r["ok"] for r in results["tasks"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    run(main, get_args_parser())
