"""inspectkit.onnxrt: the one session factory, a module exported once and served from the cache after that, damaged
or foreign cache files replaced, batches split between single-threaded sessions, and None where torch must run."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from inspectkit import onnxrt
from inspectkit.errors import UserError
from inspectkit.onnxrt import OnnxModule, export_graph, make_session


class Small(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


EXAMPLE = torch.zeros(1, 3, 8, 8)


def inputs(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_the_session_factory_takes_files_and_bytes_and_names_bad_levels(tmp_path):
    graph = export_graph(Small().eval(), EXAMPLE)
    path = tmp_path / "small.onnx"
    path.write_bytes(graph)
    expected = Small()(inputs()).detach().numpy()
    for source in (graph, path):
        session = make_session(source, threads=1, optimization="basic", spinning=False)
        out = session.run(None, {"x": inputs().numpy()})[0]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="optimisation level 'fast'"):
        make_session(graph, optimization="fast")


def test_a_keyed_graph_is_exported_once_then_served_from_the_cache(tmp_path):
    key = {"module": "Small", "weights": "seed 0"}
    first = OnnxModule.load(Small(), EXAMPLE, name="small", key=key, folder=tmp_path)
    second = OnnxModule.load(Small(), EXAMPLE, name="small", key=key, folder=tmp_path)
    assert (first.source, second.source) == ("exported", "cache")
    assert second.path == first.path and [p.name for p in tmp_path.iterdir()] == [first.path.name]
    expected = Small()(inputs()).detach()
    assert torch.allclose(second(inputs()), expected, rtol=1e-5, atol=1e-6)
    # another input shape or another key is another graph
    other_shape = OnnxModule.load(Small(), torch.zeros(1, 3, 16, 16), name="small", key=key, folder=tmp_path)
    other_key = OnnxModule.load(Small(1), EXAMPLE, name="small", key={**key, "weights": "seed 1"}, folder=tmp_path)
    assert other_shape.source == other_key.source == "exported"
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize("damage", ["truncated", "other bytes", "another key's graph"])
def test_a_damaged_or_foreign_cached_graph_is_exported_again(damage, tmp_path):
    key = {"module": "Small", "weights": "seed 0"}
    path = OnnxModule.load(Small(), EXAMPLE, name="small", key=key, folder=tmp_path).path
    graph = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(graph[:len(graph) // 2])
    elif damage == "other bytes":
        path.write_bytes(graph[:-8] + b"\0" * 8)
    else:  # a valid graph of other weights, under this key's name with its own content hash: the key inside differs
        foreign = OnnxModule.load(Small(1), EXAMPLE, name="small", key={**key, "weights": "seed 1"}, folder=tmp_path)
        foreign_graph = foreign.path.read_bytes()
        foreign.path.unlink()
        path.unlink()
        content = hashlib.sha256(foreign_graph).hexdigest()[:onnxrt.HASH_CHARS]
        path = path.with_name(f"{path.name[:-len('.onnx') - onnxrt.HASH_CHARS]}{content}.onnx")
        path.write_bytes(foreign_graph)
    again = OnnxModule.load(Small(), EXAMPLE, name="small", key=key, folder=tmp_path)
    assert again.source == "re-exported"
    assert [p.name for p in tmp_path.iterdir()] == [again.path.name] and again.path.read_bytes() == graph
    assert torch.allclose(again(inputs()), Small()(inputs()).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_batches_split_between_single_threaded_sessions_give_the_whole_batch(n):
    two = OnnxModule.load(Small(), EXAMPLE, threads=2)
    assert len(two.sessions) == 2 and two.source == "memory"
    out = two(inputs(n))
    assert out.shape == (n, 4)
    assert torch.allclose(out, Small()(inputs(n)).detach(), rtol=1e-5, atol=1e-6)


class Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> list[float]:
        return x.flatten().tolist()


def test_none_where_torch_has_to_run(monkeypatch, tmp_path):
    assert OnnxModule.load(Untraceable(), EXAMPLE) is None
    assert OnnxModule.load(Untraceable(), EXAMPLE, key={"module": "Untraceable"}, folder=tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(onnxrt, "available", lambda: False)
    assert OnnxModule.load(Small(), EXAMPLE) is None
