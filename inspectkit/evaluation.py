"""Evaluating the trained attempts: the best-attempt rule, the comparison table, the reproduction check, the best
attempt's figures, and fast re-scoring of every checkpoint, where each frozen-trunk output is computed once and shared
by every split and attempt with the same trunk; also the defect type of each image in a folder."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .anomaly import PatchCore
from .attempts import BEST_ATTEMPT_RULE, best_attempt, select_attempts
from .cache import DecodeCache
from .classifier import Classifier, fold_batch_norms
from .data import Category
from .errors import UserError
from .figures.training import confusion_matrix_figure, learning_curves_figure, misclassified_gallery
from .gate import gated_probabilities, score_with_regions
from .imageio import read_image_folder
from .metrics import SUMMARY_METRICS, classification_metrics, paired_differences, summarize_splits
from .models import normalize, state_fingerprint
from .onnxrt import OnnxModule
from .results import schema_problem, sha256_file
from .training import (
    EVAL_BATCH,
    augment_view,
    checkpoint_path,
    classifier_from_checkpoint,
    load_checkpoint,
    load_images,
    read_attempt_result,
    retrain_command,
)

# Re-scored metrics within this of the attempt_N.json ones count as reproduced (they are ratios of counts, so a
# real difference is at least 1 / the number of test images).
REPRODUCTION_TOLERANCE = 1e-9
# Images per batch through the rest of the network: it is cheap per image, so a larger batch than the trunk's
# (EVAL_BATCH) spreads its per-call overhead; measured on 2 busy cores, 32 -> 128 cut it by about a third.
HEAD_BATCH = 128
GALLERY_SIZE = 160
GALLERY_MAX = 24

# ---------------------------------------------------------------- comparing attempts

def compare(results: list[dict]) -> dict:
    """The comparison table, the best attempt by ``best_attempt``, and paired differences between attempts."""
    table = [{"attempt": r["attempt"], "name": r["config"]["name"], "what_changed": r["config"]["what_changed"],
              **{m: {k: r["test"][m][k] for k in ("mean", "std")} for m in SUMMARY_METRICS},
              "per_class_recall": {c: {k: v[k] for k in ("mean", "std")}
                                   for c, v in r["test"]["per_class_recall"].items()},
              "wall_s": r["timing"]["wall_s"], "epochs": r["config"]["epochs"],
              "image_size": r["config"]["image_size"]} for r in results]
    best = best_attempt(results)
    differences = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            differences.append({"a": a["attempt"], "b": b["attempt"], **{
                m: paired_differences(a["test"][m]["values"], b["test"][m]["values"]) for m in SUMMARY_METRICS}})
    return {"table": table,
            "best_attempt": best["attempt"],
            "best": {"attempt": best["attempt"], "name": best["config"]["name"],
                     "macro_f1": {k: best["test"]["macro_f1"][k] for k in ("mean", "std")},
                     "rule": BEST_ATTEMPT_RULE},
            "differences": differences,
            "differences_note": "b minus a per split on the same splits; mean and sample std of the differences"}


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

def trunk_fingerprint(checkpoint: dict) -> str:
    """sha256 of the architecture and every trunk tensor (name, dtype, shape, bytes) of a checkpoint's model:
    checkpoints with equal fingerprints compute the same trunk outputs, so they can share them."""
    trunk = state_fingerprint(checkpoint["model"], "trunk.")
    return hashlib.sha256(f"{checkpoint['arch']}:{trunk}".encode()).hexdigest()


def inference_model(checkpoint: dict, device: torch.device) -> Classifier:
    """The checkpoint's classifier on ``device`` in eval mode, made faster for inference only: every batch norm
    that directly follows a convolution folded into it, and the weights in channels-last memory format (together
    about 2.5x faster on a CPU than the plain model; the outputs agree to float rounding, ~1e-6 relative)."""
    model = _classifier(checkpoint)
    fold_batch_norms(model)
    return model.to(device, memory_format=torch.channels_last).eval()


# (arch, every tensor's name, shape and dtype) -> a classifier of that structure, as classifier_from_checkpoint
# built it; the few structures of one run are kept, so each checkpoint costs a copy, not a build
_STRUCTURES: dict[tuple, Classifier] = {}
_MAX_STRUCTURES = 8


def _classifier(checkpoint: dict) -> Classifier:
    """``classifier_from_checkpoint``, built once per model structure and copied after that: building probes the
    backbone with a 224 px image, 0.2 s on idle cores and up to 2 s on busy ones, for each of twenty checkpoints.
    The state dict decides everything that matters in eval mode (dropout rates do nothing there)."""
    structure = (checkpoint["arch"], tuple((k, tuple(v.shape), v.dtype) for k, v in checkpoint["model"].items()))
    if structure not in _STRUCTURES:
        if len(_STRUCTURES) >= _MAX_STRUCTURES:
            _STRUCTURES.pop(next(iter(_STRUCTURES)))
        _STRUCTURES[structure] = classifier_from_checkpoint(checkpoint)
        return copy.deepcopy(_STRUCTURES[structure])
    model = copy.deepcopy(_STRUCTURES[structure])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.eval()


class _FromTrunk(nn.Module):
    """``Classifier.from_trunk`` as a module's forward, so that it can be exported."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.from_trunk(features)


def trunk_runner(model: Classifier, device: torch.device,
                 image_shape: tuple[int, int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``trunk_outputs`` runs the frozen trunk on a uint8 batch of ``image_shape`` (3, H, W): on a CPU, through
    onnxruntime (its graph cached per trunk weights and input shape, ``onnxrt.OnnxModule``), else
    ``model.trunk_features``. The same outputs to float rounding (3e-6 on MobileNetV2 at 320 px); on 2 busy cores
    at 320 px, 16 instead of 38 ms per image."""
    if device.type == "cpu":
        example = normalize(torch.zeros((1, *image_shape), dtype=torch.uint8))
        key = {"module": "Classifier.trunk", "weights": state_fingerprint(model.trunk.state_dict())}
        run = OnnxModule.load(model.trunk, example, name="trunk", key=key, threads=torch.get_num_threads())
        if run is not None:
            return lambda images_uint8: run(normalize(images_uint8))
    return model.trunk_features


def head_runner(model: Classifier, device: torch.device,
                feature_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``split_probabilities`` runs the rest of the network on trunk outputs of ``feature_shape`` (C, h, w): on a
    CPU through onnxruntime (exported into memory, 0.5 s, then about 1.8x faster), else ``model.from_trunk``."""
    if device.type == "cpu":
        run = OnnxModule.load(_FromTrunk(model).eval(), torch.zeros((1, *feature_shape)),
                              threads=torch.get_num_threads())
        if run is not None:
            return run
    return model.from_trunk


@torch.no_grad()
def trunk_outputs(model: Classifier, images_uint8: torch.Tensor, views: int, device: torch.device,
                  progress: bool = True) -> torch.Tensor:
    """The frozen trunk's outputs for the first ``views`` test-time views (``augment_view`` without jitter) of
    uint8 images (N, 3, H, W): float tensor (views, N, C, h, w) on the CPU."""
    model.eval()
    run_trunk = trunk_runner(model, device, tuple(images_uint8.shape[1:]))
    outputs = None  # allocated at the first batch's shape, filled in place: no second copy at the end
    with tqdm(total=views * len(images_uint8), desc="trunk outputs", unit="img", leave=False,
              disable=not progress) as bar:
        for view in range(views):
            for start in range(0, len(images_uint8), EVAL_BATCH):
                batch = images_uint8[start:start + EVAL_BATCH]
                if view:
                    batch = torch.stack([augment_view(img, view, jitter=None) for img in batch])
                features = run_trunk(batch.to(device)).cpu()
                if outputs is None:
                    outputs = torch.empty((views, len(images_uint8), *features.shape[1:]), dtype=features.dtype)
                outputs[view, start:start + len(batch)] = features
                bar.update(len(batch))
    return outputs


@torch.no_grad()
def split_probabilities(checkpoint: dict, trunk_outputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Class probabilities (N, classes) of one checkpoint from its test images' trunk outputs (views, N, C, h, w):
    the rest of the network per view, softmax, then the mean over views, as ``training.predict`` computes them.

    The one place that turns a checkpoint into test probabilities: a checkpoint that carries more than a
    classifier (a rule that overrides its decisions) is applied here.
    """
    views, n = trunk_outputs.shape[:2]
    run_head = head_runner(inference_model(checkpoint, device), device, tuple(trunk_outputs.shape[2:]))
    flat = trunk_outputs.flatten(0, 1)  # every view of every image, so the batches can be larger
    logits = torch.cat([run_head(flat[i:i + HEAD_BATCH].to(device)).cpu() for i in range(0, len(flat), HEAD_BATCH)])
    total = 0
    for view_probs in torch.softmax(logits, 1).view(views, n, -1):
        total = total + view_probs
    return total / views


# glibc's mallopt parameters, and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


@contextlib.contextmanager
def heap_reuse() -> Iterator[None]:
    """While the block runs, glibc's malloc serves every block from the heap and keeps freed memory there for the
    next one; after it, the defaults come back and the freed memory is returned. Outside glibc, nothing changes.

    A batch of 32 images at 320 px makes activations of up to 300 MB; by default each is a fresh mapping whose pages
    the kernel zeroes, layer after layer. Reused instead: trunk outputs 60 -> 38 ms per image on 2 busy cores (a
    third of the time was page faults), peak memory about the same (1.4 vs 1.5 GB)."""
    libc = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no mallopt)
            glibc = ctypes.CDLL(None)
            glibc.mallopt(_M_MMAP_MAX, 0)
            glibc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            libc = glibc
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


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
    with heap_reuse():  # the trunk's large activations reuse freed pages
        for (_, size), items in groups.items():
            start = time.perf_counter()
            files = list(dict.fromkeys(f for item in items for f in item.files))  # the union, in first-seen order
            position = {f: i for i, f in enumerate(files)}
            views = max(item.checkpoint["config"].get("test_time_views", 1) for item in items)
            images = load_images(category, files, size, cache, progress)
            outputs = trunk_outputs(inference_model(items[0].checkpoint, device), images, views, device, progress)
            timing["trunk_s"] += time.perf_counter() - start
            timing["trunk_images"] += views * len(files)
            start = time.perf_counter()
            for item in tqdm(items, desc=f"scoring checkpoints at {size} px", unit="split", leave=False,
                             disable=not progress):
                index = torch.tensor([position[f] for f in item.files])
                item_views = item.checkpoint["config"].get("test_time_views", 1)
                probs = split_probabilities(item.checkpoint, outputs[:item_views, index], device)
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
    outputs = trunk_outputs(inference_model(checkpoint, device), torch.stack(tensors),
                            checkpoint["config"].get("test_time_views", 1), device, progress)
    probs = split_probabilities(checkpoint, outputs, device)
    names = checkpoint["class_names"]
    if "gate" in checkpoint:  # an anomaly-guided attempt: its split's detector decides good vs defect
        gate = checkpoint["gate"]
        scores, regions = score_with_regions(PatchCore.load(path.parent / gate["detector"], device),
                                             torch.stack(tensors))
        probs = gated_probabilities(probs, scores, gate, regions, names)
    rows = [{"file": str(f), "class": names[int(p.argmax())], "probability": round(float(p.max()), 4)}
            for f, p in zip(files, probs, strict=True)]
    return rows, skipped
