"""The fitted PatchCore detector as one ONNX graph: uint8 images in, anomaly maps and image scores out, the memory
bank inside; writing it atomically with its metadata, checking it against the torch detector (onnxruntime), and
timing both.

The graph is traced from the modules that ``PatchCore.score`` runs (the extractor and scoring.py's scorer), so the
exported math cannot drift from the run-time math.
"""

from __future__ import annotations

import copy
import io
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..onnxrt import make_session
from ..results import atomic_write, ensure_writable_dir
from .patchcore import FILE_VERSION, PatchCore

INPUT_NAME = "images"  # uint8 (N, 3, H, W), RGB, at the detector's input shape
MAP_OUTPUT = "anomaly_map"  # float32 (N, H, W)
SCORE_OUTPUT = "image_score"  # float32 (N,)
ONNX_FORMAT = "inspectkit-patchcore-onnx"
ONNX_FORMAT_VERSION = 2  # 2: position-aware scores; bump when the graph's inputs, outputs or metadata change meaning
DEFAULT_OPSET = 17
OPSETS = range(11, 21)  # 11: Resize with pytorch_half_pixel; 20: the newest the TorchScript exporter writes
# stored when the detector has them (set by calibration); read with getattr, so older detectors export too
THRESHOLD_FIELDS = ("image_threshold", "pixel_threshold", "score_center", "score_scale")
# Parity targets against the torch detector: image scores relative, maps relative to the largest map value.
IMAGE_SCORE_RTOL = 1e-4
MAP_TOL = 1e-3
PARITY_BATCH = 8  # images per onnxruntime call: one image's query-by-bank distance matrix is ~40 MB at 320 px


class ScoringGraph(nn.Module):
    """A fitted detector as one module for export: uint8 (N, 3, H, W) -> (anomaly_map (N, H, W), image_score (N,)):
    the detector's own extractor, then its own scorer (scoring.py), the same modules that ``PatchCore.score`` runs.
    """

    def __init__(self, detector: PatchCore) -> None:
        super().__init__()
        if detector.scorer is None or detector.input_shape is None:
            raise UserError("the detector is not fitted; fit it (python anomaly.py) before exporting it to ONNX")
        # traced on the CPU: a detector on a GPU is exported from a CPU copy of its modules
        on_cpu = detector.device.type == "cpu"
        self.extractor = (detector.extractor if on_cpu else copy.deepcopy(detector.extractor).cpu()).eval()
        self.scorer = (detector.scorer if on_cpu else copy.deepcopy(detector.scorer).cpu()).eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scorer(self.extractor(images))


def check_destination(path: str | os.PathLike) -> Path:
    """The ``.onnx`` destination, checked before any work: not a folder, in a folder that exists (created here if
    needed) and takes new files. A one-line UserError otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"cannot write the ONNX model to {path}: it is a folder; give a file path such as "
                        f"{path / 'detector.onnx'}")
    ensure_writable_dir(path.parent, "the ONNX model's folder")
    return path


def metadata(detector: PatchCore, opset: int) -> dict[str, str]:
    """The strings stored in the model's ``metadata_props``: what the graph expects and the detector's settings."""
    from .. import __version__

    height, width = detector.input_shape
    props = {
        "format": ONNX_FORMAT,
        "format_version": str(ONNX_FORMAT_VERSION),
        "inspectkit_version": __version__,
        "detector_file_version": str(FILE_VERSION),
        "input_shape": json.dumps([int(height), int(width)]),
        "input": f"{INPUT_NAME}: uint8 (N, 3, {height}, {width}) RGB, resized with PIL bilinear",
        "outputs": f"{MAP_OUTPUT}: float32 (N, {height}, {width}); {SCORE_OUTPUT}: float32 (N,)",
        "config": json.dumps(detector.config.as_dict()),
        "weights": json.dumps(detector.weights, default=str),
        "bank_shape": json.dumps(list(detector.bank.shape)),
        "position": json.dumps({k: v for k, v in (detector.position or {}).items() if k != "note"}, default=float),
        "opset": str(opset),
    }
    for name in THRESHOLD_FIELDS:
        value = getattr(detector, name, None)
        if value is not None:
            props[name] = json.dumps(value, default=float)
    return props


def export_onnx(detector: PatchCore, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``detector`` as an ONNX model (dynamic batch axis) to ``path`` atomically, after ``onnx.checker``
    passed; returns the path. An unwritable destination is a UserError before anything is exported."""
    import onnx

    if opset not in OPSETS:
        raise UserError(f"ONNX opset {opset} is not supported; use {OPSETS.start} to {OPSETS.stop - 1}")
    path = check_destination(path)
    graph = ScoringGraph(detector).eval()
    height, width = detector.input_shape
    example = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (the one that needs no onnxscript) warns that it is deprecated, and its tracer
        # that the height and width become constants: they are, the graph is made for the detector's input shape.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[MAP_OUTPUT, SCORE_OUTPUT], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, MAP_OUTPUT: {0: "batch"},
                                        SCORE_OUTPUT: {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, metadata(detector, opset))
    model.doc_string = "inspectkit PatchCore detector: uint8 images -> anomaly maps and image scores"
    onnx.checker.check_model(model, full_check=True)
    return atomic_write(path, model.SerializeToString())


def run_session(session: Any, images_uint8: torch.Tensor | np.ndarray,
                batch_size: int = PARITY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(image_scores (N,), maps (N, H, W)) from an onnxruntime session, in batches of ``batch_size``."""
    images = images_uint8.numpy() if isinstance(images_uint8, torch.Tensor) else np.asarray(images_uint8)
    scores, maps = [], []
    for start in range(0, len(images), batch_size):
        batch_maps, batch_scores = session.run([MAP_OUTPUT, SCORE_OUTPUT],
                                               {INPUT_NAME: np.ascontiguousarray(images[start:start + batch_size])})
        scores.append(batch_scores)
        maps.append(batch_maps)
    return np.concatenate(scores), np.concatenate(maps)


def check_parity(detector: PatchCore, onnx_path: str | os.PathLike, images_uint8: torch.Tensor,
                 threads: int = 2) -> dict:
    """Score ``images_uint8`` with the torch detector and with the ONNX model (onnxruntime, CPU). Image scores pass
    within ``IMAGE_SCORE_RTOL`` relative (per image), maps within ``MAP_TOL`` of the largest torch map value."""
    torch_scores, torch_maps = detector.score(images_uint8)
    ort_scores, ort_maps = run_session(make_session(onnx_path, threads), images_uint8)
    score_rel = np.abs(ort_scores - torch_scores) / np.maximum(np.abs(torch_scores), np.finfo(np.float32).tiny)
    map_abs = float(np.abs(ort_maps - torch_maps).max())
    map_scale = float(np.abs(torch_maps).max())
    map_rel = map_abs / map_scale if map_scale > 0 else map_abs
    return {
        "images": len(images_uint8),
        "image_score_max_rel_diff": float(score_rel.max()),
        "map_max_abs_diff": map_abs,
        "map_max_rel_diff": map_rel,
        "map_max_value": map_scale,
        "image_score_rtol": IMAGE_SCORE_RTOL,
        "map_tol": MAP_TOL,
        "image_scores_pass": bool(score_rel.max() <= IMAGE_SCORE_RTOL),
        "maps_pass": bool(map_rel <= MAP_TOL),
    }


def _median_ms(step: Any, n_images: int, warmup: int, repeats: int) -> dict:
    for i in range(warmup):
        step(i % n_images)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        step(i % n_images)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2), "repeats": repeats}


def latency(detector: PatchCore, onnx_path: str | os.PathLike, images_uint8: torch.Tensor, threads: int = 2,
            warmup: int = 3, repeats: int = 20, optimization: str = "all", spinning: bool = True) -> dict:
    """Per-image latency at batch 1 (median of ``repeats`` after ``warmup``) of ``detector.score`` with its features
    in torch and of the ONNX model in onnxruntime, both with ``threads`` threads; the images are taken in turn."""
    import onnxruntime as ort

    session = make_session(onnx_path, threads, optimization, spinning)
    arrays = images_uint8.numpy()
    before, runtime = torch.get_num_threads(), detector.features.runtime
    torch.set_num_threads(threads)
    detector.use_runtime("torch")
    try:
        torch_ms = _median_ms(lambda i: detector.score(images_uint8[i:i + 1]), len(arrays), warmup, repeats)
    finally:
        torch.set_num_threads(before)
        detector.use_runtime(runtime)
    ort_ms = _median_ms(lambda i: session.run(None, {INPUT_NAME: arrays[i:i + 1]}), len(arrays), warmup, repeats)
    return {
        "torch": torch_ms,
        "onnxruntime": ort_ms,
        "ort_over_torch": round(ort_ms["median_ms"] / torch_ms["median_ms"], 3),
        "threads": threads,
        "batch": 1,
        "warmup": warmup,
        "input_shape": list(detector.input_shape),
        "onnxruntime_session": {"providers": session.get_providers(), "optimization": optimization,
                                "intra_op_threads": threads, "inter_op_threads": 1, "allow_spinning": spinning},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "cpu": platform.processor() or platform.machine(),
    }
