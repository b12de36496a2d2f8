"""Weights resolution: none, a state-dict file (strict), and clear errors for every way it can go wrong."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from inspectkit.errors import UserError
from inspectkit.models import build_model, check_arch, normalize, resolve_device
from inspectkit.results import sha256_file


@pytest.fixture(scope="module")
def squeezenet_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    return path


def test_file_weights_load_exactly_and_are_recorded(squeezenet_file):
    model, info = build_model("squeezenet1_1", str(squeezenet_file))
    saved = torch.load(squeezenet_file, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert info == {"spec": "file", "file": str(squeezenet_file), "sha256": sha256_file(squeezenet_file),
                    "pretrained": True}


def test_none_is_random_init_and_says_so():
    _, info = build_model("squeezenet1_1", "none")
    assert info["pretrained"] is False and info["spec"] == "none"


def test_random_init_leaves_the_global_seed_alone_and_repeats():
    """build_model draws from its own seed: the user's torch.manual_seed stream goes on as if it had not run."""
    torch.manual_seed(1234)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    first, _ = build_model("squeezenet1_1", "none")
    assert torch.equal(torch.rand(5), expected)
    second, _ = build_model("squeezenet1_1", "none")
    other, _ = build_model("squeezenet1_1", "none", seed=1)
    names = first.state_dict().keys()
    assert all(torch.equal(first.state_dict()[k], second.state_dict()[k]) for k in names)
    assert not all(torch.equal(first.state_dict()[k], other.state_dict()[k]) for k in names)


def test_a_weights_file_leaves_the_global_seed_alone(squeezenet_file):
    state = torch.get_rng_state()
    build_model("squeezenet1_1", str(squeezenet_file))
    assert torch.equal(torch.get_rng_state(), state)


def test_weights_for_another_architecture_is_a_clear_error(squeezenet_file):
    with pytest.raises(UserError, match=r"does not fit --arch mobilenet_v3_small.*another architecture"):
        build_model("mobilenet_v3_small", str(squeezenet_file))


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a zip"])
def test_corrupt_or_empty_weights_file_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="cannot read weights file"):
        build_model("squeezenet1_1", str(bad))


def test_missing_weights_file_names_the_alternatives(tmp_path):
    with pytest.raises(UserError, match="--weights none"):
        build_model("squeezenet1_1", str(tmp_path / "nope.pth"))


def test_unknown_arch_lists_real_names():
    with pytest.raises(UserError, match=r"unknown --arch 'resnet1000'.*resnet18"):
        check_arch("resnet1000")


def test_imagenet_without_network_points_at_weights_path(monkeypatch, tmp_path):
    """With no internet (simulated at the download call) the error names --weights PATH and none."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"--weights PATH.*--weights none"):
        build_model("squeezenet1_1", "imagenet")


def test_device_and_normalisation():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            resolve_device("cuda")
    batch = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(batch)
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                         (1 - 0.406) / 0.225]))
