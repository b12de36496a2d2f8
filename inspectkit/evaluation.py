"""Evaluating the trained attempts, as evaluate.py runs it: re-score every checkpoint (each frozen-trunk output
computed once and shared by every split and attempt with the same trunk), check that the re-scored metrics reproduce
attempt_N.json's, compare the attempts (``attempts.compare``) and draw the best one's figures; also the defect type
of each image in a folder."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .allocator import heap_reuse
from .anomaly import PatchCore
from .attempts import compare, select_attempts
from .cache import DecodeCache
from .checkpoints import checkpoint_path, load_checkpoint, read_attempt_result, retrain_command
from .data import Category
from .errors import UserError
from .figures.training import confusion_matrix_figure, learning_curves_figure, misclassified_gallery
from .gate import gated_probabilities, score_with_regions
from .imageio import read_image_folder
from .inference import ClassifierCache, inference_model, split_probabilities, trunk_fingerprint, trunk_outputs
from .metrics import SUMMARY_METRICS, classification_metrics, summarize_splits
from .results import schema_problem, sha256_file
from .tensors import load_images

# Re-scored metrics within this of the attempt_N.json ones count as reproduced (they are ratios of counts, so a
# real difference is at least 1 / the number of test images).
REPRODUCTION_TOLERANCE = 1e-9
GALLERY_SIZE = 160
GALLERY_MAX = 24

# ---------------------------------------------------------------- checking the attempts

def reproduction_check(result: dict, rescored: list[dict]) -> dict:
    """Re-scored test metrics against the attempt_N.json ones: the largest absolute difference over splits per
    metric, and whether every one is within ``REPRODUCTION_TOLERANCE``."""
    summary = summarize_splits([s["metrics"] for s in rescored], result["class_names"])
    gaps = {m: max(abs(a - b) for a, b in zip(summary[m]["values"], result["test"][m]["values"], strict=True))
            for m in SUMMARY_METRICS}
    return {"attempt": result["attempt"], "max_abs_difference": gaps,
            "equal": all(g <= REPRODUCTION_TOLERANCE for g in gaps.values()),
            "macro_f1": {k: summary["macro_f1"][k] for k in ("mean", "std")}}


def trained_results(out: Path, attempt_choice: str) -> list[dict]:
    """The attempt_N.json files in ``out`` for ``attempt_choice`` (see ``select_attempts``); a UserError saying
    what to run when there are none."""
    numbers = [a.number for a in select_attempts(attempt_choice)]
    found = [read_attempt_result(out / f"attempt_{n}.json", out) for n in numbers
             if (out / f"attempt_{n}.json").is_file()]
    if not found:
        raise UserError(f"no trained attempts in {out} (no attempt_N.json); run first: python train.py "
                        f"--attempt {attempt_choice} --out {out} (with your data flags)")
    return found


# ---------------------------------------------------------------- fast re-scoring

@dataclass
class _Scored:
    """One split's checkpoint waiting to be scored."""

    attempt: int
    split: int
    checkpoint: dict
    files: list[str]


@dataclass
class Rescored:
    """Per attempt, per split: the test files, true and predicted class indices, the top probability and the
    metrics; and where the time went (``timing``)."""

    splits: dict[int, list[dict]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def _load_split_checkpoint(out: Path, attempt: int, split: int, label_of: Mapping[str, str],
                           category: Category) -> _Scored:
    path = checkpoint_path(out, attempt, split)
    remake = retrain_command(out, attempt)
    if not path.is_file():
        raise UserError(f"no checkpoint {path}; run: {remake}")
    checkpoint = load_checkpoint(path, remake)
    if (problem := schema_problem(checkpoint, {"split.test": list})) is not None:  # which images it held out
        raise UserError(f"{path} is not a train.py checkpoint: {problem}; make it again with: {remake}")
    files = checkpoint["split"]["test"]
    missing = [f for f in files if f not in label_of]
    if missing:
        raise UserError(f"test image {category.root / missing[0]} of {path} not found; pass the --data-root "
                        "and --category that train.py used")
    # the optimizer state is not needed to score, and twenty of them would hold hundreds of MB
    kept = {k: v for k, v in checkpoint.items() if k not in ("optimizer", "lr_scheduler")}
    return _Scored(attempt, split, kept, files)


def rescore_attempts(results: list[dict], category: Category, out: Path, device: torch.device,
                     cache: DecodeCache | None = None, progress: bool = True) -> Rescored:
    """Load every split's checkpoint of each trained attempt and score its held-out test images again.

    Checkpoints are grouped by (``trunk_fingerprint``, image size); each group decodes the union of its test images
    once, computes their trunk outputs once per view, and runs only the rest of the network per checkpoint
    (``split_probabilities``). A missing or foreign checkpoint is a UserError that says what to run.
    """
    cache = cache or DecodeCache()
    label_of = {category.relative(s.path): s.label for s in category.samples}
    loaded = [_load_split_checkpoint(out, r["attempt"], k, label_of, category)
              for r in tqdm(results, desc="checkpoints", unit="attempt", leave=False, disable=not progress)
              for k in range(len(r["splits"]))]
    groups: dict[tuple[str, int], list[_Scored]] = {}
    for item in loaded:
        groups.setdefault((trunk_fingerprint(item.checkpoint), item.checkpoint["config"]["image_size"]),
                          []).append(item)

    timing = {"trunk_s": 0.0, "heads_s": 0.0, "trunk_images": 0, "trunk_groups": len(groups)}
    result_names = {r["attempt"]: r["class_names"] for r in results}
    gate_scores: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}  # attempts 3 and 4 share their detectors
    probabilities: dict[tuple[int, int], torch.Tensor] = {}
    classifiers = ClassifierCache()  # each model structure built once, copied for every checkpoint
    with heap_reuse():  # the trunk's large activations reuse freed pages
        for (_, size), items in groups.items():
            start = time.perf_counter()
            files = list(dict.fromkeys(f for item in items for f in item.files))  # the union, in first-seen order
            position = {f: i for i, f in enumerate(files)}
            views = max(item.checkpoint["config"].get("test_time_views", 1) for item in items)
            images = load_images(category, files, size, cache, progress)
            outputs = trunk_outputs(inference_model(items[0].checkpoint, device, classifiers), images, views, device,
                                    progress)
            timing["trunk_s"] += time.perf_counter() - start
            timing["trunk_images"] += views * len(files)
            start = time.perf_counter()
            for item in tqdm(items, desc=f"scoring checkpoints at {size} px", unit="split", leave=False,
                             disable=not progress):
                index = torch.tensor([position[f] for f in item.files])
                item_views = item.checkpoint["config"].get("test_time_views", 1)
                probs = split_probabilities(item.checkpoint, outputs[:item_views, index], device, classifiers)
                if "gate" in item.checkpoint:
                    probs = _apply_saved_gate(item, probs, images[index], out, result_names[item.attempt], gate_scores,
                                              device)
                probabilities[item.attempt, item.split] = probs
            timing["heads_s"] += time.perf_counter() - start
            del outputs

    rescored = Rescored(timing={k: round(v, 2) if isinstance(v, float) else v for k, v in timing.items()})
    for result in results:
        class_names = result["class_names"]
        rescored.splits[result["attempt"]] = []
        for item in (i for i in loaded if i.attempt == result["attempt"]):
            probs = probabilities[item.attempt, item.split]
            y_true = [class_names.index(label_of[f]) for f in item.files]
            y_pred = probs.argmax(1).tolist()
            rescored.splits[result["attempt"]].append({
                "files": item.files, "y_true": y_true, "y_pred": y_pred, "prob": probs.max(1).values.tolist(),
                "metrics": classification_metrics(y_true, y_pred, class_names)})
    return rescored


def _apply_saved_gate(item: _Scored, probs: torch.Tensor, images: torch.Tensor, out: Path, class_names: list[str],
                      memo: dict, device: torch.device) -> torch.Tensor:
    """An anomaly-guided checkpoint: its split's saved detector scores the test images again, and the saved
    threshold decides good vs defect (gate.gated_probabilities), exactly as train.py did."""
    gate = item.checkpoint["gate"]
    path = checkpoint_path(out, item.attempt, item.split).parent / gate["detector"]
    key = (sha256_file(path) if path.is_file() else str(path), tuple(item.files))
    if key not in memo:
        memo[key] = score_with_regions(PatchCore.load(path, device), images)  # a missing file: UserError naming it
    scores, regions = memo[key]
    return gated_probabilities(probs, scores, gate, regions, class_names)


def rescore_attempt(result: dict, category: Category, out: Path, device: torch.device,
                    cache: DecodeCache | None = None, progress: bool = True) -> list[dict]:
    """``rescore_attempts`` for one attempt: per split, the metrics and predictions."""
    return rescore_attempts([result], category, out, device, cache, progress).splits[result["attempt"]]


# ---------------------------------------------------------------- the evaluation record

def evaluate_attempts(results: list[dict], category: Category, out: Path, device: torch.device,
                      cache: DecodeCache | None = None, progress: bool = True) -> dict:
    """Re-score every trained attempt, check the reproduction, compare the attempts and draw the best one's figures
    into ``out/figures``. Returns the evaluation.json record without provenance; ``timing`` holds the wall time.

    A UserError, before any work, when the attempts were trained on another category.
    """
    if category.name != results[0]["category"]:
        raise UserError(f"the attempts in {out} were trained on '{results[0]['category']}', not "
                        f"'{category.name}'; pass --category {results[0]['category']}")
    wall_start = time.perf_counter()
    cache = cache or DecodeCache()
    rescored = rescore_attempts(results, category, out, device, cache, progress)
    rescore_s = time.perf_counter() - wall_start
    reproduction = [reproduction_check(r, rescored.splits[r["attempt"]]) for r in results]
    comparison = compare(results)
    best = next(r for r in results if r["attempt"] == comparison["best_attempt"])
    start = time.perf_counter()
    figures = draw_figures(best, rescored.splits[best["attempt"]], category, cache, out / "figures")
    timing = {"wall_s": round(time.perf_counter() - wall_start, 2), "rescore_s": round(rescore_s, 2),
              **rescored.timing, "figures_s": round(time.perf_counter() - start, 2),
              "images_decoded": cache.decoded, "device": str(device), "torch_threads": torch.get_num_threads()}
    return {"category": category.name, "class_names": category.class_names, **comparison,
            "reproduction": reproduction, "figures": [p.relative_to(out).as_posix() for p in figures],
            "timing": timing}


def draw_figures(best: dict, rescored: list[dict], category: Category, cache: DecodeCache,
                 folder: Path) -> list[Path]:
    """The best attempt's summed test confusion matrix, learning curves and misclassified-image gallery."""
    name = f"attempt {best['attempt']} ({best['config']['name']})"
    matrix = summarize_splits([s["metrics"] for s in rescored], best["class_names"])["confusion_matrix_sum"]
    paths = [confusion_matrix_figure(matrix, best["class_names"],
                                     f"{category.name}, {name}: test confusion matrix, {len(rescored)} splits summed",
                                     folder / "classification_confusion_matrix.png"),
             learning_curves_figure(best["splits"], f"{category.name}, {name}: learning curves",
                                    folder / "classification_learning_curves.png")]
    images, captions = [], []
    for k, split in enumerate(rescored):
        for file, t, p, prob in zip(split["files"], split["y_true"], split["y_pred"], split["prob"], strict=True):
            if t != p and len(images) < GALLERY_MAX:
                images.append(cache.image(category.root / file, GALLERY_SIZE))
                captions.append(f"split {k}: {Path(file).name}\ntrue {best['class_names'][t]}\n"
                                f"pred {best['class_names'][p]} ({prob:.2f})")
    paths.append(misclassified_gallery(images, captions, f"{category.name}, {name}: misclassified test images "
                                                         f"(all splits)", folder / "classification_misclassified.png"))
    return paths


# ---------------------------------------------------------------- a folder of new images

def predict_folder(out: Path, attempt: int, split: int, folder: str | Path, device: torch.device,
                   cache: DecodeCache | None = None,
                   progress: bool = True) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The defect type of every image in ``folder`` by one split's checkpoint of ``attempt``, through the same
    ``split_probabilities`` as the re-scoring. Returns rows ``{"file", "class", "probability"}`` and the skipped
    files with their reasons."""
    path = checkpoint_path(out, attempt, split)
    if not path.is_file():
        raise UserError(f"no checkpoint {path}; run first: {retrain_command(out, attempt)}")
    checkpoint = load_checkpoint(path, retrain_command(out, attempt))
    cache = cache or DecodeCache()
    size = checkpoint["config"]["image_size"]
    files, tensors, skipped = read_image_folder(folder, lambda f: cache.image_tensor(f, size))
    classifiers = ClassifierCache()  # the classifier is built once for the trunk and the rest of the network
    outputs = trunk_outputs(inference_model(checkpoint, device, classifiers), torch.stack(tensors),
                            checkpoint["config"].get("test_time_views", 1), device, progress)
    probs = split_probabilities(checkpoint, outputs, device, classifiers)
    names = checkpoint["class_names"]
    if "gate" in checkpoint:  # an anomaly-guided attempt: its split's detector decides good vs defect
        gate = checkpoint["gate"]
        scores, regions = score_with_regions(PatchCore.load(path.parent / gate["detector"], device),
                                             torch.stack(tensors))
        probs = gated_probabilities(probs, scores, gate, regions, names)
    rows = [{"file": str(f), "class": names[int(p.argmax())], "probability": round(float(p.max()), 4)}
            for f, p in zip(files, probs, strict=True)]
    return rows, skipped
