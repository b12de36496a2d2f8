"""TorchVision models by name, with weights resolved from ``imagenet``, ``none`` or a state-dict file."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import UserError
from .results import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_archs() -> list[str]:
    """Every TorchVision classification model name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_arch(arch: str) -> str:
    """Return ``arch`` if TorchVision has it, else a UserError listing a few valid names."""
    names = classification_archs()
    if arch not in names:
        close = [n for n in names if n.startswith(arch[:4])] or names[:12]
        raise UserError(f"unknown --arch '{arch}'; TorchVision classification models include: {', '.join(close)}")
    return arch


def describe_weights(spec: str) -> dict:
    """The provenance record of a ``--weights`` value (file path and sha256 for a file)."""
    if spec in ("imagenet", "none"):
        return {"spec": spec, "file": None, "sha256": None, "pretrained": spec == "imagenet"}
    path = Path(spec).expanduser()
    return {"spec": "file", "file": str(path), "sha256": sha256_file(path), "pretrained": True}


def state_fingerprint(state: Mapping[str, torch.Tensor], prefix: str = "") -> str:
    """sha256 of every tensor (name, dtype, shape, bytes) of a state dict whose name starts with ``prefix``: the
    same code with state dicts of equal fingerprints computes the same outputs."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        if name.startswith(prefix):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_torch_file(path: str | Path, kind: str, missing_hint: str, unreadable_hint: str) -> object:
    """``torch.load`` a file with ``weights_only=True``; a UserError naming ``kind`` if it is missing or unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{kind} file {path} not found; {missing_hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise UserError(f"cannot read {kind} file {path} ({exc.__class__.__name__}); {unreadable_hint}") from None


def load_state_dict_file(path: str | Path) -> dict:
    """Read a state dict saved with ``torch.save``; a UserError for a missing or unreadable file."""
    state = load_torch_file(path, "weights", "pass --weights PATH to a state_dict file, --weights imagenet, "
                            "or --weights none", "is it a torch.save'd state_dict?")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file {Path(path).expanduser()} does not hold a state_dict of tensors")
    return state


def random_init_model(arch: str, seed: int = 0) -> nn.Module:
    """``arch`` with random weights drawn from ``seed``; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):  # the model is built on the CPU, so only the CPU RNG is used
        torch.manual_seed(seed)
        return torchvision.models.get_model(arch, weights=None)


def build_model(arch: str, weights: str = "imagenet", seed: int = 0) -> tuple[nn.Module, dict]:
    """A TorchVision model with its ImageNet head, and the provenance record of its weights.

    ``weights`` is ``imagenet`` (torchvision's weights API and cache), ``none`` (random init from ``seed``, the
    same weights on every call) or a path to a state dict for exactly this architecture (loaded with
    ``weights_only=True`` and strict keys).
    """
    check_arch(arch)
    if weights == "none":
        return random_init_model(arch, seed), describe_weights("none")
    if weights == "imagenet":
        try:
            default = torchvision.models.get_model_weights(arch).DEFAULT
            with torch.random.fork_rng(devices=[]):  # the init before loading draws from the RNG: not the user's
                model = torchvision.models.get_model(arch, weights=default)
        except Exception as exc:  # no internet: URLError, socket errors, HTTP errors, ...
            raise UserError(f"could not get torchvision's ImageNet weights for {arch} ({exc.__class__.__name__}: "
                            f"{str(exc)[:80]}); without internet pass --weights PATH to a state_dict file, "
                            "or --weights none for random init") from None
        info = describe_weights("imagenet")
        info["torchvision_weights"] = str(default)
        return model, info
    state = load_state_dict_file(weights)
    model = random_init_model(arch, seed)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"weights file {weights} does not fit --arch {arch} ({first[:120]}); "
                        "is it for another architecture?") from None
    return model, describe_weights(weights)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps asked for, but Apple MPS is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown --device '{name}'; choose auto, cpu, cuda or mps")
    return torch.device(name)


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW batch to float, scaled to [0, 1] and normalised with the ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std
