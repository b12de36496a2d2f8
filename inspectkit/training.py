"""Training and scoring the defect-type classifier: decoded image tensors, a bank of trunk features per augmented
view, the logit-adjusted loss, ``train_one_epoch`` / ``evaluate`` loops, early stopping and plain-dict checkpoints."""

from __future__ import annotations

import copy
import functools
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as v2
from torch import nn
from tqdm import tqdm

from .anomaly.metrics import image_auroc
from .attempts import Attempt, classifier_recipe
from .cache import DecodeCache
from .classifier import Classifier, build_classifier, inference_trunk
from .data import GOOD, Category
from .errors import UserError
from .gate import detector_path, fit_gate, fit_region_model, gated_probabilities, score_with_regions, tune_threshold
from .metrics import SUMMARY_METRICS, classification_metrics, summarize_splits
from .models import normalize
from .results import NUMBER, Fields, atomic_write, read_result, schema_problem

EVAL_BATCH = 32


# ---------------------------------------------------------------- data

def load_images(category: Category, files: Sequence[str], size: int, cache: DecodeCache,
                progress: bool = True) -> torch.Tensor:
    """uint8 tensor (N, 3, size, size) of the category's ``files``, each decoded at most once per size."""
    tensors = [cache.image_tensor(category.root / f, size)
               for f in tqdm(files, desc=f"images at {size} px", unit="img", leave=False, disable=not progress)]
    return torch.stack(tensors)


def augment_view(image: torch.Tensor, view: int, jitter: v2.Transform | None) -> torch.Tensor:
    """View ``view`` of a uint8 (3, H, W) image: one of the 8 flips/90-degree rotations, then colour jitter.

    View 0 is the image itself; views 1..7 cover the rest of the dihedral group, later views repeat it.
    """
    out = torch.rot90(image, view % 4, dims=(1, 2))
    if (view // 4) % 2:
        out = torch.flip(out, dims=(2,))
    if view > 0 and jitter is not None:
        out = jitter(out)
    return out.contiguous()


def trunk_feature_bank(model: Classifier, images: torch.Tensor, views: int, seed: int, device: torch.device,
                       augment: bool, progress: bool = True) -> torch.Tensor:
    """Trunk outputs of every image in ``views`` augmented versions: float tensor (views, N, C, h, w).

    Computing the frozen trunk once per view is what makes fine-tuning fast on a CPU; a batch-norm-folded,
    channels-last copy of it computes the same outputs (to float rounding) about twice as fast.
    """
    jitter = v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05) if augment else None
    torch.manual_seed(seed)
    model.eval()
    trunk = inference_trunk(model.trunk).to(device)
    bank = []
    with tqdm(total=views * len(images), desc="trunk features", unit="img", leave=False,
              disable=not progress) as bar:
        for view in range(views):
            outputs = []
            for start in range(0, len(images), EVAL_BATCH):
                batch = torch.stack([augment_view(img, view, jitter) for img in images[start:start + EVAL_BATCH]])
                with torch.no_grad():
                    x = normalize(batch.to(device)).contiguous(memory_format=torch.channels_last)
                    outputs.append(trunk(x).contiguous().cpu())
                bar.update(len(batch))
            bank.append(torch.cat(outputs))
    return torch.stack(bank)


# ---------------------------------------------------------------- loss

class LogitAdjustedLoss(nn.Module):
    """Cross-entropy on ``logits + tau * log(prior)`` (Menon et al., ICLR 2021, the loss form).

    Training with it makes the raw logits fit a balanced error, so rare classes win more decisions at test
    time; with uniform priors or ``tau = 0`` it is plain cross-entropy.
    """

    def __init__(self, priors: torch.Tensor, tau: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("offset", tau * torch.log(priors.float()))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits + self.offset, target)


def class_priors(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Class frequencies of ``labels``; a class with no example gets a count of one so its log stays finite."""
    counts = Counter(labels)
    freq = torch.tensor([max(counts.get(c, 0), 1) for c in range(num_classes)], dtype=torch.float)
    return freq / freq.sum()


def make_criterion(attempt: Attempt, train_labels: Sequence[int], num_classes: int) -> nn.Module:
    if attempt.loss == "cross_entropy":
        return nn.CrossEntropyLoss()
    if attempt.loss == "logit_adjusted":
        return LogitAdjustedLoss(class_priors(train_labels, num_classes), attempt.logit_adjust_tau)
    raise ValueError(f"unknown loss '{attempt.loss}'; choose cross_entropy or logit_adjusted")


# ---------------------------------------------------------------- loops

def train_one_epoch(model: Classifier, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                    desc: str = "", progress: bool = True) -> float:
    """One pass over ``batches`` of (trunk features, labels); returns the mean training loss per image."""
    model.train()
    total, seen = 0.0, 0
    with tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress) as bar:
        for features, labels in bar:
            features, labels = features.to(device), labels.to(device)
            loss = criterion(model.from_trunk(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: Classifier, criterion: nn.Module, features: torch.Tensor, labels: torch.Tensor,
             device: torch.device) -> tuple[float, np.ndarray]:
    """Mean loss and predicted class indices on trunk ``features``."""
    model.eval()
    logits = torch.cat([model.from_trunk(features[i:i + EVAL_BATCH].to(device)).cpu()
                        for i in range(0, len(features), EVAL_BATCH)])
    return float(criterion(logits, labels).item()), logits.argmax(1).numpy()


@torch.no_grad()
def predict(model: Classifier, images_uint8: torch.Tensor, device: torch.device, views: int = 1) -> torch.Tensor:
    """Class probabilities (N, classes) for uint8 images, through the whole model: the plain reference that the
    fast path of train.py and evaluate.py (``evaluation.split_probabilities``) is tested against.

    ``views`` > 1 averages the probabilities over the first ``views`` flips/rotations (test-time augmentation).
    """
    model.eval()
    total = 0
    for view in range(views):
        oriented = torch.stack([augment_view(img, view, jitter=None) for img in images_uint8]) if view else images_uint8
        total = total + torch.cat([torch.softmax(model(oriented[i:i + EVAL_BATCH].to(device)), 1).cpu()
                                   for i in range(0, len(oriented), EVAL_BATCH)])
    return total / views


@dataclass
class EarlyStopping:
    """Keep the best model by validation macro-F1 (ties: lower validation loss); stop after ``patience`` bad epochs;
    ``patience=None`` keeps the last epoch."""

    patience: int | None
    start: int = 0
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    best_epoch: int = -1
    best_state: dict = field(default_factory=dict)
    bad_epochs: int = 0

    def step(self, model: nn.Module, epoch: int, val_macro_f1: float, val_loss: float) -> bool:
        """Record this epoch; True when training should stop. Before epoch ``start`` the latest model is kept
        without competing, so a lucky early score on a small validation set cannot end training."""
        if epoch < self.start:
            self.best_epoch, self.best_state = epoch, copy.deepcopy(model.state_dict())
            return False
        key = (val_macro_f1, -val_loss)
        if self.patience is None or key > self.best_key:
            self.best_key, self.best_epoch, self.bad_epochs = key, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience


# What evaluate.py, export and the report read from a checkpoint and from an attempt_N.json: checked once, on reading.
CHECKPOINT_FIELDS: Fields = {"model": dict, "arch": str, "class_names": list, "config.image_size": int,
                             "config.train_levels": int, "config.head": str, "config.head_hidden": int,
                             "config.head_dropout": NUMBER}
ATTEMPT_FIELDS: Fields = {"attempt": int, "category": str, "class_names": list, "splits": list,
                          "config.name": str, "config.what_changed": str, "config.epochs": int,
                          "config.image_size": int, "timing.wall_s": NUMBER, "test.per_class_recall": dict,
                          **{f"test.{m}.{k}": NUMBER for m in SUMMARY_METRICS for k in ("mean", "std")},
                          **{f"test.{m}.values": list for m in SUMMARY_METRICS}}


def retrain_command(out: Path, attempt: int | str) -> str:
    return f"python train.py --attempt {attempt} --out {out} (with the data, --arch and --weights flags used before)"


def save_checkpoint(path: Path, checkpoint: dict) -> Path:
    """``torch.save`` a plain dict through ``atomic_write`` (a unique temporary file, then a rename)."""
    return atomic_write(path, lambda fh: torch.save(checkpoint, fh))


def load_checkpoint(path: Path, remake: str = "python train.py (with the flags used before)") -> dict:
    """A checkpoint written by ``save_checkpoint``, read with ``weights_only=True`` and checked for the fields
    that rebuilding the classifier needs; a UserError naming the file and ``remake`` otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise UserError(f"cannot read checkpoint {path} ({exc.__class__.__name__}); make it again with: "
                        f"{remake}") from None
    if (problem := schema_problem(checkpoint, CHECKPOINT_FIELDS)) is not None:
        raise UserError(f"{path} is not a train.py checkpoint: {problem}; make it again with: {remake}")
    if (problem := _model_problem(checkpoint)) is not None:
        raise UserError(f"checkpoint {path} is damaged ({problem}); make it again with: {remake}")
    return checkpoint


def _model_problem(checkpoint: dict) -> str | None:
    """Whether the weights fit the classifier the checkpoint's arch, config and class names describe (every
    tensor's name, shape and dtype, and no NaN), so that parts that disagree are refused here, not by a crash in
    ``load_state_dict`` or a wrong class name later."""
    names = checkpoint["class_names"]
    if not names or not all(isinstance(name, str) for name in names):
        return "its class names are not a list of names"
    config = checkpoint["config"]
    try:
        wanted = _model_layout(checkpoint["arch"], len(names), config["train_levels"], config["head"],
                               config["head_hidden"], float(config["head_dropout"]))
    except (UserError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        return f"its arch and config do not describe a classifier: {str(exc).splitlines()[0][:100]}"
    model = checkpoint["model"]
    if set(model) != set(wanted):
        odd = sorted(set(model) ^ set(wanted))
        return f"its weights do not match {checkpoint['arch']} with {len(names)} classes (e.g. {odd[0]})"
    for key, tensor in model.items():
        if not isinstance(tensor, torch.Tensor) or (tuple(tensor.shape), tensor.dtype) != wanted[key]:
            shown = f"{tensor.dtype} {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "not a tensor"
            return f"weight {key} is {shown}, not {wanted[key][1]} {wanted[key][0]} ({len(names)} classes)"
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"weight {key} holds NaN or infinity"
    return None


@functools.cache
def _model_layout(arch: str, classes: int, train_levels: int, head: str, head_hidden: int,
                  head_dropout: float) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Each tensor's (shape, dtype) of the classifier these settings build, built on torch's ``meta`` device (no
    memory, no compute) and once per settings."""
    with torch.device("meta"):
        model, _ = build_classifier(arch, "none", classes, train_levels=train_levels, head=head,
                                    head_hidden=head_hidden, head_dropout=head_dropout)
    return {key: (tuple(tensor.shape), tensor.dtype) for key, tensor in model.state_dict().items()}


def read_attempt_result(path: Path, out: Path) -> dict:
    """An ``attempt_N.json`` written by train.py, checked for every field its readers use."""
    return read_result(path, ATTEMPT_FIELDS, retrain_command(out, path.stem.removeprefix("attempt_")))


def checkpoint_path(out: Path, attempt: int, split: int) -> Path:
    return Path(out) / "checkpoints" / f"attempt_{attempt}" / f"split_{split}.pt"


def classifier_from_checkpoint(checkpoint: dict) -> Classifier:
    """Rebuild the classifier a checkpoint was trained as, and load its weights (strict)."""
    config = checkpoint["config"]
    model, _ = build_classifier(checkpoint["arch"], "none", len(checkpoint["class_names"]),
                                train_levels=config["train_levels"], head=config["head"],
                                head_hidden=config["head_hidden"], head_dropout=config["head_dropout"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.eval()


# ---------------------------------------------------------------- one attempt

@dataclass
class Timer:
    """Wall seconds spent per named phase."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, start: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _optimizer(attempt: Attempt, model: Classifier) -> torch.optim.Optimizer:
    groups = [{"params": list(model.head.parameters()), "lr": attempt.lr_head, "name": "head"}]
    tail = [p for p in model.tail.parameters() if p.requires_grad]
    if tail and attempt.lr_backbone > 0:
        groups.append({"params": tail, "lr": attempt.lr_backbone, "name": "backbone"})
    else:
        for param in tail:
            param.requires_grad_(False)
    if attempt.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=attempt.weight_decay)
    if attempt.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=attempt.weight_decay)
    raise ValueError(f"unknown optimizer '{attempt.optimizer}'; choose adam or adamw")


def _scheduler(attempt: Attempt, optimizer: torch.optim.Optimizer, epochs: int):
    if attempt.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if attempt.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule '{attempt.schedule}'; choose constant or cosine")


def _epoch_batches(features: torch.Tensor, labels: torch.Tensor, attempt: Attempt,
                   generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled (or class-balanced) batches, each image in a randomly chosen augmented view."""
    n = labels.shape[0]
    if attempt.balanced_sampling:
        weights = 1.0 / torch.bincount(labels).float()[labels]
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    views = torch.randint(features.shape[0], (n,), generator=generator)
    return [(features[views[idx], idx], labels[idx])
            for idx in (order[i:i + attempt.batch_size] for i in range(0, n, attempt.batch_size))]


def train_attempt(attempt: Attempt, category: Category, manifest: dict, *, arch: str, weights: str,
                  device: torch.device, out: Path, epochs: int | None = None, cache: DecodeCache | None = None,
                  banks: dict | None = None, progress: bool = True) -> dict:
    """Train and test ``attempt`` on every split of ``manifest``; checkpoints go to ``out/checkpoints``.

    ``banks`` (a dict kept by the caller) lets attempts with the same input size, frozen trunk and
    augmentation share one trunk-feature bank. Returns the results record without provenance: config,
    per-split curves and test metrics, the mean and std over splits, and timing.
    """
    wall_start = time.perf_counter()
    timer = Timer()
    cache = cache or DecodeCache()
    epochs = attempt.epochs if epochs is None else epochs
    class_names = category.class_names
    label_of = {img["file"]: class_names.index(img["label"]) for img in manifest["images"]}
    files = [img["file"] for img in manifest["images"]]
    position = {f: i for i, f in enumerate(files)}
    labels_all = torch.tensor([label_of[f] for f in files])

    start = time.perf_counter()
    images = load_images(category, files, attempt.image_size, cache, progress)
    timer.add("decode", start)

    base_model, built = build_classifier(arch, weights, len(class_names), train_levels=attempt.train_levels,
                                         head=attempt.head, head_hidden=attempt.head_hidden,
                                         head_dropout=attempt.head_dropout)
    base_model.to(device)
    start = time.perf_counter()
    banks = {} if banks is None else banks
    bank_key = (arch, weights, attempt.image_size, attempt.train_levels, attempt.augmented_views,
                attempt.augmentation, manifest["splits"][0]["seed"], tuple(files))
    if bank_key not in banks:
        banks[bank_key] = trunk_feature_bank(base_model, images, attempt.augmented_views,
                                             manifest["splits"][0]["seed"], device,
                                             augment=bool(attempt.augmentation), progress=progress)
    bank = banks[bank_key]
    timer.add("trunk_features", start)

    splits, trained_images = [], 0
    for k, split in enumerate(manifest["splits"]):
        idx = {p: torch.tensor([position[f] for f in split[p]]) for p in ("train", "val", "test")}
        trained_key = ("trained", classifier_recipe(attempt.to_dict()), epochs, arch, weights, split["seed"],
                       tuple(files), tuple(idx["train"].tolist()))
        if trained_key in banks:  # the same classifier recipe on the same split, trained earlier in this run
            model, optimizer, scheduler, stopper, curves, probs = banks[trained_key]
        else:
            torch.manual_seed(split["seed"])
            model = copy.deepcopy(base_model)
            model.head = make_fresh_head(model.head)
            model.to(device)
            optimizer = _optimizer(attempt, model)
            scheduler = _scheduler(attempt, optimizer, epochs)
            train_labels = labels_all[idx["train"]]
            criterion = make_criterion(attempt, train_labels.tolist(), len(class_names)).to(device)
            val_criterion = nn.CrossEntropyLoss()
            generator = torch.Generator().manual_seed(split["seed"])
            stopper = EarlyStopping(attempt.early_stopping_patience, attempt.early_stopping_start)
            curves: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_accuracy": [], "val_macro_f1": [],
                                              "lr_head": []}
            train_bank = bank[:, idx["train"]]
            val_features, val_labels = bank[0, idx["val"]], labels_all[idx["val"]]
            for epoch in range(epochs):
                start = time.perf_counter()
                batches = _epoch_batches(train_bank, train_labels, attempt, generator)
                curves["lr_head"].append(optimizer.param_groups[0]["lr"])
                desc = f"attempt {attempt.number} split {k + 1}/{len(manifest['splits'])} epoch {epoch + 1}/{epochs}"
                train_loss = train_one_epoch(model, criterion, optimizer, batches, device, desc, progress)
                scheduler.step()
                trained_images += len(train_labels)
                timer.add("train", start)
                start = time.perf_counter()
                val_loss, val_pred = evaluate(model, val_criterion, val_features, val_labels, device)
                val = classification_metrics(val_labels.tolist(), val_pred.tolist(), class_names)
                timer.add("validate", start)
                curves["train_loss"].append(train_loss)
                curves["val_loss"].append(val_loss)
                curves["val_accuracy"].append(val["accuracy"])
                curves["val_macro_f1"].append(val["macro_f1"])
                if progress:
                    tqdm.write(f"{desc}: train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                               f"val macro-F1 {val['macro_f1']:.3f}")
                if stopper.step(model, epoch, val["macro_f1"], val_loss):
                    break
            model.load_state_dict(stopper.best_state)

            start = time.perf_counter()
            probs = _test_probabilities(model, attempt, arch, class_names, images, idx["test"], manifest, position,
                                        bank_key, banks, device, progress)
            timer.add("test", start)
            banks[trained_key] = (model, optimizer, scheduler, stopper, curves, probs)
        gate = None
        if attempt.anomaly_gate:
            start = time.perf_counter()
            gate = _gate_split(attempt, images, labels_all, idx, class_names, arch, weights, split["seed"], device,
                               checkpoint_path(out, attempt.number, k), banks)
            saved_gate = gate.pop("saved")
            probs = gated_probabilities(probs, np.asarray(gate["test_scores"]), saved_gate, gate.pop("test_regions"),
                                        list(class_names))
            timer.add("gate", start)
        start = time.perf_counter()
        test_pred = probs.argmax(1)
        test = classification_metrics(labels_all[idx["test"]].tolist(), test_pred.tolist(), class_names)
        timer.add("test", start)
        save_checkpoint(checkpoint_path(out, attempt.number, k), {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
            "epoch": stopper.best_epoch, "config": attempt.to_dict(), "arch": arch, "class_names": class_names,
            "category": category.name, "split": {"index": k, "seed": split["seed"], "test": split["test"]},
            "test_metrics": {m: test[m] for m in ("accuracy", "balanced_accuracy", "macro_f1")},
            **({"gate": saved_gate} if gate else {})})
        splits.append({"seed": split["seed"], "n_train": len(idx["train"]), "n_val": len(idx["val"]),
                       "n_test": len(idx["test"]), "epochs_run": len(curves["train_loss"]),
                       "best_epoch": stopper.best_epoch, "curves": curves, "test_metrics": test,
                       "test_predictions": _prediction_rows(split["test"], labels_all[idx["test"]], probs,
                                                            class_names),
                       **({"gate": gate} if gate else {})})

    wall = time.perf_counter() - wall_start
    timing = {"wall_s": round(wall, 2), **{f"{k}_s": round(v, 2) for k, v in timer.seconds.items()}}
    timing["data_loading_share"] = round(timer.seconds["decode"] / wall, 4)
    timing["input_pipeline_share"] = round((timer.seconds["decode"] + timer.seconds["trunk_features"]) / wall, 4)
    timing["train_images_per_s"] = round(trained_images / max(timer.seconds.get("train", 0.0), 1e-9), 2)
    timing["images_decoded"] = cache.decoded
    timing["device"] = str(device)
    timing["torch_threads"] = torch.get_num_threads()
    config = {**attempt.to_dict(), "epochs": epochs, "arch": arch, "weights": built["weights"],
              "layout": built["layout"], "frozen": f"backbone stages 0..{built['layout']['frozen_stages'] - 1} "
                                                   f"of {built['layout']['stages']} (batch-norm statistics frozen too)"}
    return {"attempt": attempt.number, "name": attempt.name, "category": category.name, "class_names": class_names,
            "config": config, "splits": splits, "test": summarize_splits([s["test_metrics"] for s in splits],
                                                                          class_names),
            "timing": timing}


def _test_probabilities(model: Classifier, attempt: Attempt, arch: str, class_names: Sequence[str],
                        images: torch.Tensor, test: torch.Tensor, manifest: dict, position: dict[str, int],
                        bank_key: tuple, banks: dict, device: torch.device, progress: bool) -> torch.Tensor:
    """A split's test probabilities, computed as evaluate.py re-computes them from the checkpoint (batch norms
    folded, ONNX Runtime on a CPU; equal to ``predict`` to float rounding). The frozen trunk's outputs for the
    test-time views of every image in any split's test part are computed once per run and shared by the splits
    and by the attempts with the same trunk: on bottle about 3x less time than ``predict`` on each split."""
    from .evaluation import inference_model, split_probabilities, trunk_outputs  # evaluation imports this module

    checkpoint = {"model": model.state_dict(), "arch": arch, "class_names": list(class_names),
                  "config": attempt.to_dict()}
    key = ("test views", bank_key, attempt.test_time_views)
    if key not in banks:
        tested = sorted({position[f] for split in manifest["splits"] for f in split["test"]})
        outputs = trunk_outputs(inference_model(checkpoint, device), images[tested], attempt.test_time_views,
                                device, progress)
        banks[key] = (outputs, {i: row for row, i in enumerate(tested)})
    outputs, row = banks[key]
    return split_probabilities(checkpoint, outputs[:, [row[int(i)] for i in test]], device)


def _gate_split(attempt: Attempt, images: torch.Tensor, labels: torch.Tensor, idx: dict[str, torch.Tensor],
                class_names: Sequence[str], arch: str, weights: str, seed: int, device: torch.device,
                checkpoint_file: Path, banks: dict) -> dict:
    """Fit (or reuse, within one run) the split's good-only detector, tune its threshold on the validation part,
    score the test part, and (with ``attempt.region_model``) fit the defect-region model on the defective images of
    the training and validation parts (the validation part chooses nothing for it; a nested cross-validation on
    those images, bench/anomaly_guided_variants.py, found the extra images help on bottle and screw); the detector
    is saved beside the split's checkpoint for evaluate.py."""
    good = class_names.index(GOOD)
    train_good = idx["train"][labels[idx["train"]] == good]
    known = torch.cat([idx["train"], idx["val"]])
    known_defect = known[labels[known] != good]
    key = ("gate", arch, weights, attempt.image_size, seed, tuple(idx["train"].tolist()), tuple(idx["val"].tolist()),
           tuple(idx["test"].tolist()))
    if key not in banks:
        detector = fit_gate(images[train_good], arch, weights, seed, device)
        val_scores, _ = score_with_regions(detector, images[idx["val"]])
        test_scores, test_regions = score_with_regions(detector, images[idx["test"]])
        _, known_regions = score_with_regions(detector, images[known_defect])
        tuned = tune_threshold(val_scores, (labels[idx["val"]] != good).numpy())
        is_defect = (labels[idx["test"]] != good).numpy()
        region_model = fit_region_model(known_regions, [class_names[i] for i in labels[known_defect]], seed)
        banks[key] = (detector, region_model, test_regions,
                      {**tuned, "n_train_good": len(train_good), "n_region_model_defects": len(known_defect),
                       "test_scores": test_scores.tolist(),
                       "test_detector_auroc": image_auroc(is_defect, test_scores)
                       if 0 < is_defect.sum() < len(is_defect) else None})
    detector, region_model, test_regions, record = banks[key]
    path = detector.save(detector_path(checkpoint_file))
    saved = {"threshold": record["threshold"], "detector": path.name,
             **({"region_model": region_model} if attempt.region_model else {})}  # the checkpoint's gate record
    return {**record, "detector": path.name, "saved": saved, "test_regions": test_regions}


def _prediction_rows(files: Sequence[str], y_true: torch.Tensor, probs: torch.Tensor,
                     class_names: Sequence[str]) -> list[dict]:
    pred = probs.argmax(1)
    return [{"file": f, "true": class_names[int(y_true[i])], "pred": class_names[int(pred[i])],
             "prob": round(float(probs[i, pred[i]]), 6)} for i, f in enumerate(files)]


def make_fresh_head(head: nn.Module) -> nn.Module:
    """A copy of ``head`` with every layer's parameters re-initialised (from the current torch seed)."""
    fresh = copy.deepcopy(head)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh

