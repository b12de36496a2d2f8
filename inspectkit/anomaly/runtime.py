"""How the detector runs its patch feature extractor: through ONNX Runtime, on a graph exported once per
(architecture, layers, stride, pad, input shape, weights) and cached beside the decode cache (``onnxrt.py``), or
through the torch module itself, the reference and the fallback (onnxruntime missing, the export failing, a GPU).

Measured on MobileNetV2 at 352x352 on 2 cores: eager torch (channels-last) 10.9 s for 304 images, onnxruntime 2.9 s.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models import state_fingerprint
from ..onnxrt import OnnxModule, available
from .cpu import Cores
from .features import PatchFeatureExtractor

RUNTIMES = ("auto", "onnxruntime", "torch")  # auto: onnxruntime on a CPU when it is installed, else torch


def check_runtime(name: str, device: torch.device | str = "cpu") -> str:
    """``name`` if it can run on ``device``; a UserError saying what to choose otherwise."""
    if name not in RUNTIMES:
        raise UserError(f"unknown feature runtime '{name}'; choose {', '.join(RUNTIMES)}")
    if name == "onnxruntime" and torch.device(device).type != "cpu":
        raise UserError("--runtime onnxruntime runs on the CPU only; use --device cpu, or --runtime auto")
    if name == "onnxruntime" and not available():
        raise UserError("--runtime onnxruntime needs the onnxruntime package (pip install onnxruntime), or use "
                        "--runtime torch")
    return name


class FeatureRuntime:
    """uint8 images (N, 3, H, W) -> patch features (N, C, H/stride, W/stride), float32 on the CPU, by the
    extractor's exported graph in onnxruntime or by the extractor itself (``name`` says which ran last).

    Either runtime splits each batch into one part per core of ``cores`` (torch's thread count by default), run
    side by side single-threaded (onnxrt.OnnxModule; cpu.Cores for torch).
    """

    def __init__(self, extractor: PatchFeatureExtractor, arch: str, runtime: str = "auto",
                 device: torch.device | str = "cpu", cores: Cores | None = None) -> None:
        self.extractor = extractor
        self.arch = arch
        self.device = torch.device(device)
        self.runtime = check_runtime(runtime, self.device)
        self.cores = cores or Cores()
        self._graphs: dict[tuple[int, int], OnnxModule | None] = {}
        self._fingerprint: str | None = None
        self.name = "torch" if self.runtime == "torch" or self.device.type != "cpu" else "onnxruntime"

    def prepare(self, shape: tuple[int, int]) -> str:
        """Load (or export and cache) the graph for images of ``shape`` (H, W) now rather than at the first batch;
        returns the runtime that will run them, and where the graph came from (``OnnxModule.source``)."""
        graph = self._graph(tuple(shape))
        return "torch" if graph is None else f"onnxruntime ({graph.source})"

    def _graph(self, shape: tuple[int, int]) -> OnnxModule | None:
        if self.runtime == "torch" or self.device.type != "cpu":
            return None
        if shape not in self._graphs:
            if self._fingerprint is None:
                self._fingerprint = state_fingerprint(self.extractor.state_dict())
            extractor = self.extractor
            key = {"module": "PatchFeatureExtractor", "arch": self.arch, "layers": list(extractor.layers),
                   "stride": extractor.stride, "pad": extractor.pad, "weights": self._fingerprint}
            example = torch.zeros((1, 3, *shape), dtype=torch.uint8)
            self._graphs[shape] = OnnxModule.load(extractor, example, name=f"features_{self.arch}", key=key,
                                                  threads=self.cores.n)
            if self._graphs[shape] is None and self.runtime == "onnxruntime":
                raise UserError(f"could not export the {self.arch} feature extractor to ONNX for onnxruntime; "
                                "use --runtime torch")
        return self._graphs[shape]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        graph = self._graph(tuple(images.shape[-2:]))
        if graph is not None:
            self.name = "onnxruntime"
            return graph(images)
        self.name = "torch"
        return self._torch(images)

    def _torch(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
            return self.extractor(images).cpu()
        return torch.cat(self.cores.map(lambda part: self.extractor(images[part]), self.cores.ranges(len(images))))
