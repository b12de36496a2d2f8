"""Training one attempt on every split of a manifest, as train.py runs it: decode the images and compute the frozen
trunk's feature bank once, then per split train a fresh head (and tail), keep the best epoch, test it the way
evaluate.py re-tests it, let the anomaly gate decide good vs defect (attempts 3 and 4), and save the checkpoint.
``train_attempt`` returns the attempt_N.json record."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .anomaly.metrics import image_auroc
from .attempts import Attempt, classifier_recipe
from .cache import DecodeCache
from .checkpoints import checkpoint_path, save_checkpoint
from .classifier import Classifier, build_classifier
from .data import GOOD, Category
from .gate import detector_path, fit_gate, fit_region_model, gated_probabilities, score_with_regions, tune_threshold
from .inference import ClassifierCache, inference_model, split_probabilities, trunk_outputs
from .loops import (
    EarlyStopping,
    epoch_batches,
    evaluate,
    make_criterion,
    make_fresh_head,
    make_optimizer,
    make_scheduler,
    train_one_epoch,
)
from .metrics import classification_metrics, summarize_splits
from .tensors import load_images, trunk_feature_bank

CURVES = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr_head")
CLASSIFIERS = "classifiers"  # the key of the run's ClassifierCache in ``banks``


@dataclass
class Timing:
    """Wall seconds spent per named phase, and how many images were trained on (one per image and epoch)."""

    seconds: dict[str, float] = field(default_factory=dict)
    trained_images: int = 0

    def add(self, phase: str, start: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


@dataclass
class _Run:
    """One call of ``train_attempt``: its settings, the run's memo ``banks`` (kept by the caller across attempts)
    and where the time goes."""

    attempt: Attempt
    category: Category
    manifest: dict
    arch: str
    weights: str
    device: torch.device
    out: Path
    epochs: int
    banks: dict
    timing: Timing
    progress: bool

    @property
    def class_names(self) -> list[str]:
        return self.category.class_names


@dataclass
class _Inputs:
    """What every split of one attempt shares: the images in manifest order with their labels, the untrained model,
    and its trunk-feature bank over the augmented views (held in ``banks`` under ``bank_key``)."""

    files: list[str]
    position: dict[str, int]
    labels: torch.Tensor
    images: torch.Tensor
    base_model: Classifier
    built: dict
    bank_key: tuple
    bank: torch.Tensor


@dataclass
class _Trained:
    """A split's trained classifier, how training went, and its test probabilities before any gate."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stopper: EarlyStopping
    curves: dict[str, list[float]]
    probs: torch.Tensor | None = None


def train_attempt(attempt: Attempt, category: Category, manifest: dict, *, arch: str, weights: str,
                  device: torch.device, out: Path, epochs: int | None = None, cache: DecodeCache | None = None,
                  banks: dict | None = None, progress: bool = True) -> dict:
    """Train and test ``attempt`` on every split of ``manifest``; checkpoints go to ``out/checkpoints``.

    ``banks`` (a dict kept by the caller) lets attempts with the same input size, frozen trunk and
    augmentation share one trunk-feature bank, and attempts with the same classifier recipe share the trained
    classifiers. Returns the results record without provenance: config, per-split curves and test metrics, the mean
    and std over splits, and timing.
    """
    wall_start = time.perf_counter()
    cache = cache or DecodeCache()
    run = _Run(attempt, category, manifest, arch, weights, device, out, attempt.epochs if epochs is None else epochs,
               {} if banks is None else banks, Timing(), progress)
    inputs = _prepare_inputs(run, cache)
    splits = []
    for k, split in enumerate(manifest["splits"]):
        idx = {part: torch.tensor([inputs.position[f] for f in split[part]]) for part in ("train", "val", "test")}
        trained = _trained_split(run, inputs, idx, split["seed"], k)
        splits.append(_finish_split(run, inputs, idx, split, k, trained))
    return _attempt_record(run, inputs, splits, time.perf_counter() - wall_start, cache)


def _prepare_inputs(run: _Run, cache: DecodeCache) -> _Inputs:
    """Decode the manifest's images, build the untrained classifier, and compute (or reuse) its feature bank."""
    attempt = run.attempt
    label_of = {img["file"]: run.class_names.index(img["label"]) for img in run.manifest["images"]}
    files = [img["file"] for img in run.manifest["images"]]
    start = time.perf_counter()
    images = load_images(run.category, files, attempt.image_size, cache, run.progress)
    run.timing.add("decode", start)

    base_model, built = build_classifier(run.arch, run.weights, len(run.class_names),
                                         train_levels=attempt.train_levels, head=attempt.head,
                                         head_hidden=attempt.head_hidden, head_dropout=attempt.head_dropout)
    base_model.to(run.device)
    start = time.perf_counter()
    seed = run.manifest["splits"][0]["seed"]
    bank_key = (run.arch, run.weights, attempt.image_size, attempt.train_levels, attempt.augmented_views,
                attempt.augmentation, seed, tuple(files))
    if bank_key not in run.banks:
        run.banks[bank_key] = trunk_feature_bank(base_model, images, attempt.augmented_views, seed, run.device,
                                                 augment=bool(attempt.augmentation), progress=run.progress)
    run.timing.add("trunk_features", start)
    return _Inputs(files, {f: i for i, f in enumerate(files)}, torch.tensor([label_of[f] for f in files]), images,
                   base_model, built, bank_key, run.banks[bank_key])


def _trained_split(run: _Run, inputs: _Inputs, idx: dict[str, torch.Tensor], seed: int, k: int) -> _Trained:
    """The split's trained classifier with its test probabilities; reused when the same classifier recipe was
    trained on the same split earlier in this run (attempts that differ only in how they use its output)."""
    key = ("trained", classifier_recipe(run.attempt.to_dict()), run.epochs, run.arch, run.weights, seed,
           tuple(inputs.files), tuple(idx["train"].tolist()))
    if key not in run.banks:
        trained = _fit(run, inputs, idx, seed, k)
        start = time.perf_counter()
        trained.probs = _test_probabilities(run, inputs, trained.model, idx["test"])
        run.timing.add("test", start)
        run.banks[key] = trained
    return run.banks[key]


def _fit(run: _Run, inputs: _Inputs, idx: dict[str, torch.Tensor], seed: int, k: int) -> _Trained:
    """Train a fresh head (and the tail) from the split's seed for up to ``run.epochs`` epochs, validating after
    each; the model ends at the best epoch ``EarlyStopping`` kept."""
    attempt = run.attempt
    torch.manual_seed(seed)
    model = copy.deepcopy(inputs.base_model)
    model.head = make_fresh_head(model.head)
    model.to(run.device)
    optimizer = make_optimizer(attempt, model)
    scheduler = make_scheduler(attempt, optimizer, run.epochs)
    train_labels = inputs.labels[idx["train"]]
    criterion = make_criterion(attempt, train_labels.tolist(), len(run.class_names)).to(run.device)
    generator = torch.Generator().manual_seed(seed)
    stopper = EarlyStopping(attempt.early_stopping_patience, attempt.early_stopping_start)
    curves: dict[str, list[float]] = {name: [] for name in CURVES}
    train_bank = inputs.bank[:, idx["train"]]
    val_features, val_labels = inputs.bank[0, idx["val"]], inputs.labels[idx["val"]]
    for epoch in range(run.epochs):
        desc = f"attempt {attempt.number} split {k + 1}/{len(run.manifest['splits'])} epoch {epoch + 1}/{run.epochs}"
        start = time.perf_counter()
        batches = epoch_batches(train_bank, train_labels, attempt, generator)
        curves["lr_head"].append(optimizer.param_groups[0]["lr"])
        train_loss = train_one_epoch(model, criterion, optimizer, batches, run.device, desc, run.progress)
        scheduler.step()
        run.timing.trained_images += len(train_labels)
        run.timing.add("train", start)
        start = time.perf_counter()
        val_loss, val_pred = evaluate(model, nn.CrossEntropyLoss(), val_features, val_labels, run.device)
        val = classification_metrics(val_labels.tolist(), val_pred.tolist(), run.class_names)
        run.timing.add("validate", start)
        for name, value in (("train_loss", train_loss), ("val_loss", val_loss), ("val_accuracy", val["accuracy"]),
                            ("val_macro_f1", val["macro_f1"])):
            curves[name].append(value)
        if run.progress:
            tqdm.write(f"{desc}: train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                       f"val macro-F1 {val['macro_f1']:.3f}")
        if stopper.step(model, epoch, val["macro_f1"], val_loss):
            break
    model.load_state_dict(stopper.best_state)
    return _Trained(model, optimizer, scheduler, stopper, curves)


def _test_probabilities(run: _Run, inputs: _Inputs, model: Classifier, test: torch.Tensor) -> torch.Tensor:
    """A split's test probabilities, computed as evaluate.py re-computes them from the checkpoint (batch norms
    folded, ONNX Runtime on a CPU; equal to ``inference.predict`` to float rounding). The frozen trunk's outputs for
    the test-time views of every image in any split's test part are computed once per run and shared by the splits
    and by the attempts with the same trunk: on bottle about 3x less time than ``predict`` on each split."""
    attempt = run.attempt
    checkpoint = {"model": model.state_dict(), "arch": run.arch, "class_names": list(run.class_names),
                  "config": attempt.to_dict()}
    classifiers = run.banks.setdefault(CLASSIFIERS, ClassifierCache())
    key = ("test views", inputs.bank_key, attempt.test_time_views)
    if key not in run.banks:
        tested = sorted({inputs.position[f] for split in run.manifest["splits"] for f in split["test"]})
        outputs = trunk_outputs(inference_model(checkpoint, run.device, classifiers), inputs.images[tested],
                                attempt.test_time_views, run.device, run.progress)
        run.banks[key] = (outputs, {i: row for row, i in enumerate(tested)})
    outputs, row = run.banks[key]
    return split_probabilities(checkpoint, outputs[:, [row[int(i)] for i in test]], run.device, classifiers)


def _finish_split(run: _Run, inputs: _Inputs, idx: dict[str, torch.Tensor], split: dict, k: int,
                  trained: _Trained) -> dict:
    """Gate the split's test probabilities (attempts with ``anomaly_gate``), score them, save the checkpoint, and
    return the split's record."""
    attempt, class_names = run.attempt, run.class_names
    probs, gate, saved_gate = trained.probs, None, None
    if attempt.anomaly_gate:
        start = time.perf_counter()
        gate = _gate_split(run, inputs, idx, split["seed"], checkpoint_path(run.out, attempt.number, k))
        saved_gate = gate.pop("saved")
        probs = gated_probabilities(probs, np.asarray(gate["test_scores"]), saved_gate, gate.pop("test_regions"),
                                    list(class_names))
        run.timing.add("gate", start)
    start = time.perf_counter()
    test_labels = inputs.labels[idx["test"]]
    test = classification_metrics(test_labels.tolist(), probs.argmax(1).tolist(), class_names)
    run.timing.add("test", start)
    save_checkpoint(checkpoint_path(run.out, attempt.number, k), {
        "model": trained.model.state_dict(), "optimizer": trained.optimizer.state_dict(),
        "lr_scheduler": trained.scheduler.state_dict(), "epoch": trained.stopper.best_epoch,
        "config": attempt.to_dict(), "arch": run.arch, "class_names": class_names, "category": run.category.name,
        "split": {"index": k, "seed": split["seed"], "test": split["test"]},
        "test_metrics": {m: test[m] for m in ("accuracy", "balanced_accuracy", "macro_f1")},
        **({"gate": saved_gate} if gate else {})})
    return {"seed": split["seed"], "n_train": len(idx["train"]), "n_val": len(idx["val"]), "n_test": len(idx["test"]),
            "epochs_run": len(trained.curves["train_loss"]), "best_epoch": trained.stopper.best_epoch,
            "curves": trained.curves, "test_metrics": test,
            "test_predictions": _prediction_rows(split["test"], test_labels, probs, class_names),
            **({"gate": gate} if gate else {})}


def _gate_split(run: _Run, inputs: _Inputs, idx: dict[str, torch.Tensor], seed: int, checkpoint_file: Path) -> dict:
    """Fit (or reuse, within one run) the split's good-only detector, tune its threshold on the validation part,
    score the test part, and (with ``attempt.region_model``) fit the defect-region model on the defective images of
    the training and validation parts (the validation part chooses nothing for it; a nested cross-validation on
    those images, bench/anomaly_guided_variants.py, found the extra images help on bottle and screw); the detector
    is saved beside the split's checkpoint for evaluate.py."""
    images, labels, class_names = inputs.images, inputs.labels, run.class_names
    good = class_names.index(GOOD)
    train_good = idx["train"][labels[idx["train"]] == good]
    known = torch.cat([idx["train"], idx["val"]])
    known_defect = known[labels[known] != good]
    key = ("gate", run.arch, run.weights, run.attempt.image_size, seed, tuple(idx["train"].tolist()),
           tuple(idx["val"].tolist()), tuple(idx["test"].tolist()))
    if key not in run.banks:
        detector = fit_gate(images[train_good], run.arch, run.weights, seed, run.device)
        val_scores, _ = score_with_regions(detector, images[idx["val"]])
        test_scores, test_regions = score_with_regions(detector, images[idx["test"]])
        _, known_regions = score_with_regions(detector, images[known_defect])
        tuned = tune_threshold(val_scores, (labels[idx["val"]] != good).numpy())
        is_defect = (labels[idx["test"]] != good).numpy()
        region_model = fit_region_model(known_regions, [class_names[i] for i in labels[known_defect]], seed)
        run.banks[key] = (detector, region_model, test_regions,
                          {**tuned, "n_train_good": len(train_good), "n_region_model_defects": len(known_defect),
                           "test_scores": test_scores.tolist(),
                           "test_detector_auroc": image_auroc(is_defect, test_scores)
                           if 0 < is_defect.sum() < len(is_defect) else None})
    detector, region_model, test_regions, record = run.banks[key]
    path = detector.save(detector_path(checkpoint_file))
    saved = {"threshold": record["threshold"], "detector": path.name,
             **({"region_model": region_model} if run.attempt.region_model else {})}  # the checkpoint's gate record
    return {**record, "detector": path.name, "saved": saved, "test_regions": test_regions}


def _prediction_rows(files: Sequence[str], y_true: torch.Tensor, probs: torch.Tensor,
                     class_names: Sequence[str]) -> list[dict]:
    pred = probs.argmax(1)
    return [{"file": f, "true": class_names[int(y_true[i])], "pred": class_names[int(pred[i])],
             "prob": round(float(probs[i, pred[i]]), 6)} for i, f in enumerate(files)]


def _attempt_record(run: _Run, inputs: _Inputs, splits: list[dict], wall: float, cache: DecodeCache) -> dict:
    """attempt_N.json without its provenance: the config as trained, the splits, their summary and the timing."""
    seconds, attempt = run.timing.seconds, run.attempt
    timing = {"wall_s": round(wall, 2), **{f"{k}_s": round(v, 2) for k, v in seconds.items()}}
    timing["data_loading_share"] = round(seconds["decode"] / wall, 4)
    timing["input_pipeline_share"] = round((seconds["decode"] + seconds["trunk_features"]) / wall, 4)
    timing["train_images_per_s"] = round(run.timing.trained_images / max(seconds.get("train", 0.0), 1e-9), 2)
    timing["images_decoded"] = cache.decoded
    timing["device"] = str(run.device)
    timing["torch_threads"] = torch.get_num_threads()
    layout = inputs.built["layout"]
    config = {**attempt.to_dict(), "epochs": run.epochs, "arch": run.arch, "weights": inputs.built["weights"],
              "layout": layout, "frozen": f"backbone stages 0..{layout['frozen_stages'] - 1} "
                                          f"of {layout['stages']} (batch-norm statistics frozen too)"}
    return {"attempt": attempt.number, "name": attempt.name, "category": run.category.name,
            "class_names": run.class_names, "config": config, "splits": splits,
            "test": summarize_splits([s["test_metrics"] for s in splits], run.class_names), "timing": timing}
