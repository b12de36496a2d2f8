"""What train.py leaves for evaluate.py: plain-dict checkpoints (written atomically, read with ``weights_only=True``
and checked against the classifier they describe), where each one lives, the classifier rebuilt from one, and the
``attempt_N.json`` records, checked for every field their readers use."""

from __future__ import annotations

import functools
from pathlib import Path
from types import MappingProxyType

import torch

from .classifier import Classifier, build_classifier
from .errors import UserError
from .metrics import SUMMARY_METRICS
from .results import NUMBER, Fields, atomic_write, read_result, schema_problem

# What evaluate.py, export and the report read from a checkpoint and from an attempt_N.json: checked once, on reading.
CHECKPOINT_FIELDS: Fields = {"model": dict, "arch": str, "class_names": list, "config.image_size": int,
                             "config.train_levels": int, "config.head": str, "config.head_hidden": int,
                             "config.head_dropout": NUMBER}
ATTEMPT_FIELDS: Fields = {"attempt": int, "category": str, "class_names": list, "splits": list,
                          "config.name": str, "config.what_changed": str, "config.epochs": int,
                          "config.image_size": int, "timing.wall_s": NUMBER, "test.per_class_recall": dict,
                          **{f"test.{m}.{k}": NUMBER for m in SUMMARY_METRICS for k in ("mean", "std")},
                          **{f"test.{m}.values": list for m in SUMMARY_METRICS}}
# How many classifier layouts ``_model_layout`` remembers: a run meets one or two (attempts 1 and 2-4).
_LAYOUTS_KEPT = 8


def retrain_command(out: Path, attempt: int | str) -> str:
    return f"python train.py --attempt {attempt} --out {out} (with the data, --arch and --weights flags used before)"


def checkpoint_path(out: Path, attempt: int, split: int) -> Path:
    return Path(out) / "checkpoints" / f"attempt_{attempt}" / f"split_{split}.pt"


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


@functools.lru_cache(maxsize=_LAYOUTS_KEPT)
def _model_layout(arch: str, classes: int, train_levels: int, head: str, head_hidden: int,
                  head_dropout: float) -> MappingProxyType[str, tuple[tuple[int, ...], torch.dtype]]:
    """Each tensor's (shape, dtype) of the classifier these settings build, built on torch's ``meta`` device (no
    memory, no compute). A pure function of its arguments, so it is memoised; the mapping is read-only, so no
    caller can change what the next one is told."""
    with torch.device("meta"):
        model, _ = build_classifier(arch, "none", classes, train_levels=train_levels, head=head,
                                    head_hidden=head_hidden, head_dropout=head_dropout)
    return MappingProxyType({key: (tuple(tensor.shape), tensor.dtype) for key, tensor in model.state_dict().items()})


def classifier_from_checkpoint(checkpoint: dict) -> Classifier:
    """Rebuild the classifier a checkpoint was trained as, and load its weights (strict)."""
    config = checkpoint["config"]
    model, _ = build_classifier(checkpoint["arch"], "none", len(checkpoint["class_names"]),
                                train_levels=config["train_levels"], head=config["head"],
                                head_hidden=config["head_hidden"], head_dropout=config["head_dropout"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.eval()


def read_attempt_result(path: Path, out: Path) -> dict:
    """An ``attempt_N.json`` written by train.py, checked for every field its readers use."""
    return read_result(path, ATTEMPT_FIELDS, retrain_command(out, path.stem.removeprefix("attempt_")))
