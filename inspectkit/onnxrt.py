"""ONNX Runtime in one place: the CPU inference-session factory the whole toolkit uses, exporting a torch module to
an ONNX graph with a dynamic batch axis, and the disk cache of exported graphs (``<cache_root>/onnx``, beside the
decode cache): one file per key of everything that decides the graph's outputs, checked on loading.

Torch stays the reference: ``OnnxModule.load`` returns None when onnxruntime is missing or the module cannot be
exported, and the caller then runs the torch module itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cache import cache_root
from .results import UnwritablePath, atomic_write

DEFAULT_OPSET = 17
# Part of every cached graph's key: bump it when an exported module's forward changes meaning, so graphs exported
# from the old code are not served.
GRAPH_VERSION = 1
KEY_PROPERTY = "inspectkit_graph_key"  # the model's metadata entry holding the key it was exported for
KEY_CHARS, HASH_CHARS = 32, 16  # hex digits of the key and of the content hash in a cached file's name
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def available() -> bool:
    """Whether onnxruntime can be imported."""
    return importlib.util.find_spec("onnxruntime") is not None


def make_session(model: str | os.PathLike | bytes, threads: int = 2, optimization: str = "all",
                 spinning: bool = True) -> Any:
    """An onnxruntime CPU session on an ``.onnx`` file or serialised model bytes, with ``threads`` intra-op threads
    (one inter-op thread, sequential execution), graph optimisation ``optimization`` (``OPTIMIZATION_LEVELS``) and
    the worker threads' busy-waiting between operators on or off. Warnings from onnxruntime are not printed."""
    import onnxruntime as ort

    from .errors import UserError

    levels = dict(zip(OPTIMIZATION_LEVELS, (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                            ort.GraphOptimizationLevel.ORT_ENABLE_ALL), strict=True))
    if optimization not in levels:
        raise UserError(f"unknown onnxruntime optimisation level '{optimization}'; use one of "
                        f"{', '.join(OPTIMIZATION_LEVELS)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    # No memory arena: each session's arena keeps its largest activations for its life (two single-threaded
    # sessions per backbone). Measured on screw, default settings: peak RSS 3,344 MB with the arena, 1,996 MB
    # without, features 6.9 s and 8.6 s on a busy machine (within its noise).
    options.enable_cpu_mem_arena = False
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def export_graph(module: nn.Module, example: torch.Tensor, metadata: Mapping[str, str] | None = None,
                 opset: int = DEFAULT_OPSET) -> bytes:
    """``module`` (in eval mode) traced on ``example`` and serialised as ONNX, one input ``x`` and one output ``y``,
    both with a dynamic batch axis (the other axes are fixed at the example's); ``metadata`` goes into the model's
    ``metadata_props``. Raises whatever the exporter raises for a module it cannot trace."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter (the one that needs no onnxscript) warns that it is deprecated, and its tracer
        # that sizes become constants: they are, a graph is made for one input shape
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], do_constant_folding=True,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    if not metadata:
        return buffer.getvalue()
    import onnx

    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, dict(metadata))
    return model.SerializeToString()


def graph_key(parts: Mapping[str, Any]) -> str:
    """The cache key of a graph: sha256 of ``parts`` (what the caller's module depends on: architecture, weights
    fingerprint, input shape, ...) with the torch version and ``GRAPH_VERSION``."""
    record = {**parts, "torch": torch.__version__, "graph_version": GRAPH_VERSION}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def graph_folder() -> Path:
    """Where exported graphs are cached: ``<cache_root>/onnx``."""
    return cache_root() / "onnx"


class OnnxModule:
    """A torch module's exported graph in onnxruntime: ``run`` takes and returns numpy arrays, calling it takes and
    returns torch tensors. ``source`` says where the graph came from: ``cache`` (a valid cached file), ``exported``,
    ``re-exported`` (the cached file was damaged or of another key) or ``memory`` (not cached).

    With ``threads`` cores it holds that many single-threaded sessions and splits each batch between them, run side
    by side: measured on 2 busy cores with MobileNetV2 at 320 px, 32 ms per image against 39 ms for one session
    of 2 intra-op threads (52 ms with their busy-waiting on), and the least CPU time of the three (16 ms against
    19 and 25): no core waits at every operator for a core that another program is using.
    """

    def __init__(self, graph: bytes, source: str, path: Path | None = None, threads: int = 1,
                 session: Any = None) -> None:
        self.source = source
        self.path = path
        self.sessions = [session or make_session(graph, 1, spinning=False)]
        self.sessions += [make_session(graph, 1, spinning=False) for _ in range(max(1, threads) - 1)]
        self.input_name = self.sessions[0].get_inputs()[0].name
        self._pool = ThreadPoolExecutor(len(self.sessions), "onnxruntime") if len(self.sessions) > 1 else None

    @classmethod
    def load(cls, module: nn.Module, example: torch.Tensor, *, name: str = "graph",
             key: Mapping[str, Any] | None = None, threads: int = 1,
             folder: str | os.PathLike | None = None) -> OnnxModule | None:
        """``module``'s graph for inputs shaped like ``example`` (any batch), on ``threads`` cores. With ``key``
        (the module's identity, see ``graph_key``) the graph is exported once and cached in ``folder`` (default
        ``graph_folder()``) as ``<name>_<key>_<content hash>.onnx``, written atomically; a file whose bytes do not
        match its name's hash, that does not open or holds another key, is replaced by a new export. Without a
        key the graph is exported into memory each time. None when onnxruntime is missing or the module cannot be
        exported: run the torch module instead."""
        if not available():
            return None
        if key is None:
            try:
                return cls(export_graph(module.eval(), example), "memory", threads=threads)
            except Exception:  # a module the exporter cannot trace: torch computes the same outputs, only slower
                return None
        digest = graph_key({**key, "input": [list(example.shape[1:]), str(example.dtype)]})
        folder = Path(folder) if folder is not None else graph_folder()
        stem = f"{name}_{digest[:KEY_CHARS]}_"
        found = sorted(folder.glob(f"{stem}*.onnx"), key=_mtime, reverse=True) if folder.is_dir() else []
        for path in found:
            graph, session = _open_cached(path, path.name[len(stem):-len(".onnx")], digest)
            if session is not None:
                return cls(graph, "cache", path, threads, session)
            with contextlib.suppress(OSError):
                path.unlink()
        try:
            graph = export_graph(module.eval(), example, metadata={KEY_PROPERTY: digest})
            loaded = cls(graph, "re-exported" if found else "exported", None, threads)
        except Exception:
            return None
        loaded.path = folder / f"{stem}{hashlib.sha256(graph).hexdigest()[:HASH_CHARS]}.onnx"
        with contextlib.suppress(UnwritablePath):  # the cached file only saves time: never fail the run
            atomic_write(loaded.path, graph)
        return loaded

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The graph's output for a batch, split between the sessions."""
        parts = min(len(self.sessions), len(inputs))
        if parts <= 1:
            return self.sessions[0].run(None, {self.input_name: np.ascontiguousarray(inputs)})[0]
        bounds = np.linspace(0, len(inputs), parts + 1).round().astype(int)

        def run_part(i: int) -> np.ndarray:
            batch = np.ascontiguousarray(inputs[bounds[i]:bounds[i + 1]])
            return self.sessions[i].run(None, {self.input_name: batch})[0]

        return np.concatenate(list(self._pool.map(run_part, range(parts))))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(inputs.detach().cpu().numpy()))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _open_cached(path: Path, content_hash: str, digest: str) -> tuple[bytes | None, Any]:
    """``(graph bytes, a session)`` of the cached graph at ``path`` if its bytes hash to ``content_hash`` (the end of
    its name), it opens, and it was exported for ``digest``; else ``(None, None)``."""
    try:
        graph = path.read_bytes()
    except OSError:
        return None, None
    if len(content_hash) != HASH_CHARS or hashlib.sha256(graph).hexdigest()[:HASH_CHARS] != content_hash:
        return None, None  # damaged (truncated, overwritten) since it was written
    try:
        session = make_session(graph, 1, spinning=False)
    except Exception:
        return None, None
    if session.get_modelmeta().custom_metadata_map.get(KEY_PROPERTY) != digest:
        return None, None
    return graph, session
