"""What a detector file must hold: the checks ``PatchCore.load`` runs on a file's contents before it uses any of
them, so that a damaged or foreign file is refused with what is wrong, never by a crash later."""

from __future__ import annotations

from dataclasses import MISSING, fields

import numpy as np
import torch

from ..errors import UserError
from .config import PatchCoreConfig
from .features import PatchFeatureExtractor
from .position import MODES as POSITION_MODES


def state_problem(state: dict) -> str | None:
    """What is wrong with a detector file's contents, or None: checked once, where the file is read. Every part is
    checked against the config: the config's own types, the backbone's tensors (names, shapes, dtypes) against the
    backbone the config names, the memory bank's width against the features that backbone gives, and the numbers
    (no NaN or infinity anywhere), so that a file whose parts disagree is refused here, not by a crash later."""
    known = {f.name: f for f in fields(PatchCoreConfig)}
    config = state.get("config")
    if not isinstance(config, dict):
        return "no config"
    unknown = sorted(set(config) - set(known))
    if unknown:
        return f"unknown config key(s) {', '.join(unknown)}"
    for key, value in config.items():  # each value of its field's type (a field defaulting to None: any)
        default = known[key].default
        wanted = _CONFIG_TYPES.get(type(default), (type(default),))
        typed = default is not None and default is not MISSING
        if typed and (not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)):
            return f"config {key} is {type(value).__name__}, not {' or '.join(t.__name__ for t in wanted)}"
    if not all(isinstance(layer, str) for layer in config.get("layers", ())):
        return "config layers are not names"
    bank = state.get("bank")
    if not isinstance(bank, torch.Tensor) or bank.ndim != 2 or len(bank) == 0:
        return "no memory bank"
    shape = state.get("input_shape")
    if not (isinstance(shape, list | tuple) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        return "no input shape"
    if not isinstance(state.get("extractor"), dict):
        return "no backbone weights"
    names = ("image_threshold", "pixel_threshold", "score_center")
    if any(name not in state for name in names):
        return "no threshold fields"
    values = [state[name] for name in names]  # all numbers, or all None (fitted without a validation share)
    if not (all(isinstance(v, float | int) for v in values) or all(v is None for v in values)):
        return "incomplete thresholds"
    if not all(v is None or np.isfinite(v) for v in values):
        return "a threshold is not a finite number"
    if not isinstance(state.get("threshold_info"), dict):
        return "no threshold record"
    if not isinstance(state.get("weights"), dict):
        return "no weights record"
    try:
        built = PatchCoreConfig(**config)
    except (UserError, TypeError, ValueError) as exc:
        return f"its config cannot be used: {str(exc)[:100]}"
    return (_parts_problem(built, state["extractor"], bank, tuple(shape)) or _position_problem(state, built)
            or _whitening_problem(state, built, bank.shape[1]))


def _whitening_problem(state: dict, config: PatchCoreConfig, width: int) -> str | None:
    """Whether the whitening is there exactly when the config asks for it, as a finite mean (C,) and transform
    (C, C) of the features' width."""
    whitening = state.get("whitening")
    if config.whiten == 0:
        return None if whitening is None else "a whitening, but its config has whiten 0"
    if not isinstance(whitening, dict):
        return f"no whitening, but its config has whiten {config.whiten}"
    for name, shape in (("mean", [width]), ("transform", [width, width])):
        problem = _tensor_problem(whitening.get(name), shape)
        if problem:
            return f"whitening '{name}' {problem}"
    return None


def _position_problem(state: dict, config: PatchCoreConfig) -> str | None:
    """Whether the position statistics, where the file has them, are finite grids of the detector's grid."""
    shape = state["input_shape"]
    position = state.get("position")
    if position is not None:
        grid = [v // config.stride for v in shape]
        for name in ("loc", "spread", "map_spread"):
            value = position.get(name) if isinstance(position, dict) else None
            problem = _tensor_problem(value, grid)
            if problem:
                return f"position statistics '{name}' {problem}"
            if name != "loc" and not (value > 0).all():
                return f"position statistics '{name}' are not all positive"
    if config.position_norm not in POSITION_MODES:
        return f"unknown position_norm '{config.position_norm}'"
    return None


def _tensor_problem(value: object, shape: list[int]) -> str | None:
    """Why ``value`` is not a finite float tensor of ``shape``, or None."""
    if not isinstance(value, torch.Tensor) or list(value.shape) != shape or not value.is_floating_point():
        return f"is not a float tensor of {'x'.join(map(str, shape))}"
    if not torch.isfinite(value).all():
        return "holds NaN or infinity"
    return None


def _kind(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


_CONFIG_TYPES = {float: (float, int), tuple: (list, tuple)}  # a float field may hold an int; layers a list


def _parts_problem(config: PatchCoreConfig, extractor_state: dict, bank: torch.Tensor,
                   input_shape: tuple[int, int]) -> str | None:
    """Whether the backbone tensors, the memory bank and the input shape fit together and the config: the
    backbone the config names is built on torch's ``meta`` device (shapes and dtypes only, no memory, no compute)
    and run on an input of ``input_shape``; its state dict and output width are what the file must hold."""
    if config.stride < 1 or config.pad < 0 or config.pad % config.stride:
        return f"stride {config.stride} and pad {config.pad} do not fit together"
    if any(side % config.stride for side in input_shape):
        return f"input shape {input_shape[0]}x{input_shape[1]} is not a multiple of the stride {config.stride}"
    try:
        import torchvision

        with torch.device("meta"):
            backbone = torchvision.models.get_model(config.arch, weights=None)
        expected = PatchFeatureExtractor(backbone, config.layers, config.stride, config.pad)
        features = expected(torch.empty(1, 3, *input_shape, dtype=torch.uint8, device="meta"))
    except (UserError, ValueError, RuntimeError, KeyError) as exc:
        return f"its config cannot be built: {str(exc).splitlines()[0][:100]}"
    wanted = expected.state_dict()
    if set(extractor_state) != set(wanted):
        odd = sorted(set(extractor_state) ^ set(wanted))
        return f"backbone tensors do not match {config.arch} {','.join(config.layers)} (e.g. {odd[0]})"
    for key, tensor in extractor_state.items():
        if not isinstance(tensor, torch.Tensor):
            return f"backbone tensor {key} is not a tensor"
        if tensor.shape != wanted[key].shape or tensor.dtype != wanted[key].dtype:
            return (f"backbone tensor {key} is {_kind(tensor)} {tuple(tensor.shape)}, not "
                    f"{_kind(wanted[key])} {tuple(wanted[key].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"backbone tensor {key} holds NaN or infinity"
    width = features.shape[1]
    if bank.dtype != features.dtype or bank.shape[1] != width:
        return (f"memory bank is {_kind(bank)} {bank.shape[0]}x{bank.shape[1]}, but the features are "
                f"{_kind(features)} and {width} wide")
    if not torch.isfinite(bank).all():
        return "memory bank holds NaN or infinity"
    return None
