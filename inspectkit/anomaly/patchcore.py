"""The PatchCore-style detector: a coreset memory bank of good patch features, nearest-neighbour patch scores,
anomaly maps, and saving / loading the fitted detector as one plain file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..models import load_torch_file
from .coreset import DEFAULT_PROJECTION_DIM, DEFAULT_SAMPLER, make_sampler
from .cpu import one_thread
from .features import DEFAULT_STRIDE, PatchFeatureExtractor, build_extractor, default_layers, extractor_from_state
from .knn import NearestNeighbourScorer
from .maps import DEFAULT_SIGMA, anomaly_maps, image_scores

FILE_FORMAT = "inspectkit-patchcore"
FILE_VERSION = 1


@dataclass
class PatchCoreConfig:
    """Everything that defines a detector; copied into the results JSON and the detector file."""

    arch: str = "mobilenet_v2"
    layers: tuple[str, ...] = ()
    stride: int = DEFAULT_STRIDE
    image_size: int = 224
    coreset_ratio: float = 0.01
    sampler: str = DEFAULT_SAMPLER
    projection_dim: int = DEFAULT_PROJECTION_DIM
    sigma: float = DEFAULT_SIGMA
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers) or default_layers(self.arch)


class PatchCore:
    """``fit(good_images)`` builds the memory bank; ``score(images)`` returns ``(image_scores, maps)``.

    Images are uint8 tensors (N, 3, S, S) with S = ``config.image_size``. The lower-level steps
    (``extract``, ``fit_features``, ``score_features``) let a caller time each phase.
    """

    def __init__(self, extractor: PatchFeatureExtractor, config: PatchCoreConfig, weights: dict,
                 device: torch.device | str = "cpu") -> None:
        self.extractor = extractor.to(device)
        self.config = config
        self.weights = weights
        self.device = torch.device(device)
        self.bank: torch.Tensor | None = None
        self.bank_size_before_coreset: int | None = None
        self.coreset_radius: float | None = None
        self.coreset_indices: np.ndarray | None = None  # rows of the last fitted bank kept (not saved)
        self.threshold: float | None = None

    @classmethod
    def build(cls, config: PatchCoreConfig, weights: str, device: torch.device | str = "cpu") -> PatchCore:
        """A new, unfitted detector; ``weights`` is ``imagenet``, ``none`` or a state-dict path."""
        extractor, weights_info = build_extractor(config.arch, weights, config.layers, config.stride)
        return cls(extractor, config, weights_info, device)

    def extract(self, images: torch.Tensor, desc: str = "features", progress: bool = True) -> torch.Tensor:
        """(N, 3, S, S) uint8 -> (N, C, h, w) float32 patch features on the CPU, in batches.

        On a multi-core CPU, whole batches run side by side, one single-threaded forward pass per core: unlike
        torch's intra-op threads, no core waits at every layer for a core that another program is using.
        """
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        size = min(self.config.batch_size, max(1, -(-len(images) // (2 * workers))))  # >= 2 batches per worker
        starts = range(0, len(images), size)
        bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)

        def forward(start: int) -> torch.Tensor:
            features = self.extractor(images[start:start + size]).cpu()
            bar.update(len(features))
            return features

        if workers <= 1:
            batches = [forward(start) for start in starts]
        else:
            with one_thread(), ThreadPoolExecutor(max_workers=workers) as pool:
                batches = list(pool.map(forward, starts))
        bar.close()
        return torch.cat(batches)

    def fit_features(self, features: torch.Tensor, progress: bool = True) -> PatchCore:
        """Keep a coreset of the good patches ``features`` (N, C, h, w) as the memory bank."""
        patches = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        n_keep = max(1, round(self.config.coreset_ratio * len(patches)))
        sampler = make_sampler(self.config.sampler, self.config.projection_dim, progress=progress)
        self.coreset_indices = np.sort(sampler.select(patches.numpy(), n_keep, seed=self.config.seed))
        self.bank = patches[torch.from_numpy(self.coreset_indices)].clone()
        self.bank_size_before_coreset = len(patches)
        self.coreset_radius = sampler.radius
        return self

    def score_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Patch features (N, C, h, w) -> image scores (N,) and anomaly maps (N, S, S)."""
        if self.bank is None:
            raise RuntimeError("fit the detector before scoring")
        n, c, h, w = features.shape
        nearest = NearestNeighbourScorer(self.bank).distances(features.permute(0, 2, 3, 1).reshape(-1, c))
        maps = anomaly_maps(nearest.reshape(n, h, w), self.config.image_size, self.config.sigma)
        return image_scores(maps), maps

    def fit(self, good_images: torch.Tensor, progress: bool = True) -> PatchCore:
        return self.fit_features(self.extract(good_images, "features (train)", progress), progress)

    def score(self, images: torch.Tensor, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self.score_features(self.extract(images, "features (test)", progress))

    def state(self) -> dict:
        """The detector as a plain dict of tensors, numbers and strings (loadable with ``weights_only=True``)."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "config": {**asdict(self.config), "layers": list(self.config.layers)},
            "weights": self.weights,
            "extractor": {k: v.cpu() for k, v in self.extractor.state_dict().items()},
            "bank": self.bank,
            "bank_size_before_coreset": self.bank_size_before_coreset,
            "coreset_radius": self.coreset_radius,
            "threshold": self.threshold,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted detector atomically; the backbone's used layers travel with it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> PatchCore:
        """Read a file written by ``save``; a UserError if it is missing or not such a file."""
        path = Path(path).expanduser()
        state = load_torch_file(path, "detector", "fit one with python anomaly.py (it is saved under "
                                "<out>/detectors/) and pass that file to --load", "pass a file written by anomaly.py")
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT:
            raise UserError(f"{path} is not an inspectkit PatchCore detector file; pass a file written by anomaly.py")
        if state.get("version") != FILE_VERSION:
            raise UserError(f"{path} is a version {state.get('version')} detector file; this inspectkit reads "
                            f"version {FILE_VERSION}: fit it again with python anomaly.py")
        config = PatchCoreConfig(**state["config"])
        try:
            extractor = extractor_from_state(config.arch, config.layers, config.stride, state["extractor"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"detector file {path} is damaged or incompatible ({str(exc)[:100]}); fit it again") \
                from None
        detector = cls(extractor, config, state["weights"], device)
        detector.bank = state["bank"]
        detector.bank_size_before_coreset = state["bank_size_before_coreset"]
        detector.coreset_radius = state["coreset_radius"]
        detector.threshold = state["threshold"]
        return detector
