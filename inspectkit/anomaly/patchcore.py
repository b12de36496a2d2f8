"""The PatchCore-style detector: a coreset memory bank of good patch features, position-aware nearest-neighbour
patch scores (scoring.py, position.py), anomaly maps, and saving / loading the fitted detector as one plain file
(its contents checked by detector_file.py). The config it is built from is config.py's ``PatchCoreConfig``.

Fitting streams: each batch of good features gives a seeded random share of its patches to a bounded pool, and
the coreset is picked from the pool; nothing else of the training features is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..models import load_torch_file
from ..results import atomic_write
from .config import PatchCoreConfig
from .coreset import make_sampler
from .cpu import Cores
from .detector_file import state_problem
from .features import PatchFeatureExtractor, build_extractor, extractor_from_state
from .position import DEFAULT_SCALE_POWER, border_diagnostic, leave_one_out, position_statistics
from .runtime import FeatureRuntime
from .scoring import PatchScorer
from .threshold import false_alarm_threshold, normalized_scores, split_validation
from .whitening import apply_in_place, whitening

FILE_FORMAT = "inspectkit-patchcore"
# 6: the map's own spread; 5: whitened features; 4: position-aware scoring; 3: thresholds from a good-only validation
# share. Older versions are read with the scoring they were fitted with (``_with_old_scoring``)
FILE_VERSION = 6
OLD_VERSIONS = (3, 4, 5)
MIN_POSITION_IMAGES = 3  # held-out good images needed to learn position statistics (leave-one-out keeps 2)
OVERSAMPLE = 10  # the pool holds this many good patches per coreset point (what the sampler picks from)


class PatchCore:
    """``fit(good_images)`` builds the memory bank and learns from held-out good images how scores vary with the
    position in the frame; ``score(images)`` returns ``(image_scores, maps)``.

    Images are uint8 tensors (N, 3, H, W), all of the detector's ``input_shape``. For streaming, the steps are
    public: ``begin_fit`` / ``add_good`` / ``finish_fit`` and ``extract`` / ``patch_scores`` / ``maps``.
    """

    def __init__(self, extractor: PatchFeatureExtractor, config: PatchCoreConfig, weights: dict,
                 device: torch.device | str = "cpu", runtime: str = "auto") -> None:
        self.extractor = extractor.to(device)
        self.cores = Cores()  # feature batches (torch), nearest-neighbour chunks: one part per core
        self.features = FeatureRuntime(self.extractor, config.arch, runtime, device, self.cores)
        self.config = config
        self.weights = weights
        self.device = torch.device(device)
        self.input_shape: tuple[int, int] | None = None
        self.bank: torch.Tensor | None = None
        self.bank_size_before_coreset: int | None = None
        self.pool_size: int | None = None
        self.coreset_radius: float | None = None
        self.whitening: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, transform); None: Euclidean
        # set from the good-only validation share (threshold.py); None until then
        self.image_threshold: float | None = None
        self.pixel_threshold: float | None = None
        self.score_center: float | None = None
        self.threshold_info: dict = {}
        self.scorer: PatchScorer | None = None
        self.position: dict | None = None  # the position statistics' record (position.py), once calibrated
        self._pool: list[torch.Tensor] = []
        self._pool_rows: np.ndarray | None = None
        self._seen = 0

    @classmethod
    def build(cls, config: PatchCoreConfig, weights: str, device: torch.device | str = "cpu",
              runtime: str = "auto") -> PatchCore:
        """A new, unfitted detector; ``weights`` is ``imagenet``, ``none`` or a state-dict path; ``runtime`` runs
        the feature extractor (``runtime.RUNTIMES``)."""
        extractor, weights_info = build_extractor(config.arch, weights, config.layers, config.stride, config.pad)
        return cls(extractor, config, weights_info, device, runtime)

    def use_runtime(self, runtime: str) -> None:
        """Run the feature extractor with ``runtime`` from now on (``runtime.RUNTIMES``)."""
        self.features = FeatureRuntime(self.extractor, self.config.arch, runtime, self.device, self.cores)

    def extract(self, images: torch.Tensor, desc: str = "features", progress: bool = False) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, C, H/stride, W/stride) float32 patch features on the CPU, in batches of
        ``config.batch_size``, through ``self.features`` (onnxruntime or torch, runtime.py)."""
        bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
        batches = []
        for batch in _batches(images, self.config.batch_size):
            batches.append(self.features(batch))
            bar.update(len(batch))
        bar.close()
        return torch.cat(batches)

    # -- fitting, streamed --------------------------------------------------------------------------------------
    def begin_fit(self, n_images: int, input_shape: tuple[int, int]) -> PatchCore:
        """Prepare for ``n_images`` good images of ``input_shape``: which of their patches the pool keeps."""
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        cells = (self.input_shape[0] // self.config.stride) * (self.input_shape[1] // self.config.stride)
        total = n_images * cells
        n_bank = min(self.config.max_bank, max(1, round(self.config.coreset_ratio * total)))
        pool = min(total, OVERSAMPLE * n_bank)
        rng = np.random.default_rng(self.config.seed)
        self._pool_rows = np.sort(rng.choice(total, size=pool, replace=False)) if pool < total else np.arange(total)
        self.bank_size_before_coreset, self.pool_size, self._n_bank = total, pool, n_bank
        self._pool, self._seen = [], 0
        return self

    def add_good(self, features: torch.Tensor) -> None:
        """Give the pool its share of a batch of good features (N, C, h, w), in the order of ``begin_fit``."""
        patches = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        lo, hi = np.searchsorted(self._pool_rows, [self._seen, self._seen + len(patches)])
        self._pool.append(patches[torch.from_numpy(self._pool_rows[lo:hi] - self._seen)].clone())
        self._seen += len(patches)

    def finish_fit(self, progress: bool = False) -> PatchCore:
        """Learn the whitening from the pool and pick the coreset from the whitened pool; it becomes the memory
        bank."""
        if self._seen != self.bank_size_before_coreset:
            raise RuntimeError(f"begin_fit announced {self.bank_size_before_coreset} patches, got {self._seen}")
        pool = torch.cat(self._pool).float()
        self._pool = []
        self.whitening = None
        if self.config.whiten > 0:
            self.whitening = whitening(pool, self.config.whiten)
            apply_in_place(pool, *self.whitening)
        sampler = make_sampler(self.config.sampler, self.config.projection_dim, progress=progress)
        chosen = np.sort(sampler.select(pool.numpy(), min(self._n_bank, len(pool)), seed=self.config.seed))
        self.bank = pool[torch.from_numpy(chosen)].clone()
        self.coreset_radius = sampler.radius
        self._set_scorer()
        return self

    def _set_scorer(self, loc: torch.Tensor | None = None, spread: torch.Tensor | None = None,
                    map_spread: torch.Tensor | None = None) -> None:
        grid = (self.input_shape[0] // self.config.stride, self.input_shape[1] // self.config.stride)
        mean, transform = self.whitening if self.whitening is not None else (None, None)
        self.scorer = PatchScorer(self.bank, grid, self.input_shape, self.config.sigma, self.config.score_sigma,
                                  loc, spread, mean, transform, map_spread).to(self.device)

    def fit(self, good_images: torch.Tensor, progress: bool = False,
            on_features: Callable[[torch.Tensor], None] | None = None) -> PatchCore:
        """Fit on good images (N, 3, H, W) in batches of ``config.batch_size``: ``config.validation_share`` of
        them (seeded) is held out and sets the thresholds (``calibrate``)."""
        fit_idx, val_idx = split_validation(range(len(good_images)), self.config.validation_share, self.config.seed)
        fit_images = good_images[list(fit_idx)]
        self.begin_fit(len(fit_images), tuple(good_images.shape[-2:]))
        for batch in _batches(fit_images, self.config.batch_size):
            features = self.extract(batch)
            self.add_good(features)
            if on_features is not None:
                on_features(features)
        self.finish_fit(progress)
        if val_idx:
            validation = good_images[list(val_idx)]
            self.calibrate(torch.cat([self.patch_scores(self.extract(b)) for b in _batches(validation,
                                                                                           self.config.batch_size)]))
        return self

    def calibrate(self, val_distances: torch.Tensor) -> dict:
        """Learn the position statistics and set the image and pixel thresholds from held-out good images'
        nearest-neighbour distance grids (N, h, w), at the false-alarm rate ``config.false_alarm``; returns the
        record of how (threshold.py). Thresholds come from leave-one-out scores: each held-out image scored with
        statistics from the others, as a new good image would be."""
        raw = val_distances.cpu().numpy()
        scored = mapped = None
        use_position = self.config.position_norm == "cell" and len(raw) >= MIN_POSITION_IMAGES
        if use_position:
            loc, spread = position_statistics(raw, self.config.scale_power)
            map_spread = position_statistics(raw, self.config.map_scale_power)[1]
            self._set_scorer(torch.from_numpy(loc), torch.from_numpy(spread), torch.from_numpy(map_spread))
            scored = leave_one_out(raw, self.config.scale_power)
            mapped = leave_one_out(raw, self.config.map_scale_power)
        self.position = border_diagnostic(raw, scored)
        self.position["applied"] = use_position
        if self.config.position_norm == "cell" and not use_position:
            self.position["note_applied"] = (f"fewer than {MIN_POSITION_IMAGES} held-out good images: plain "
                                             "nearest-neighbour scores")
        val_scores = self.image_scores(torch.from_numpy(scored if scored is not None else raw))
        val_maps = self.maps(torch.from_numpy(mapped if mapped is not None else raw))
        rate = self.config.false_alarm
        image = false_alarm_threshold(val_scores, rate)
        pixel = false_alarm_threshold(val_maps, rate, normal_tail=False)
        self.image_threshold, self.pixel_threshold = image["threshold"], pixel["threshold"]
        self.score_center = float(np.median(val_scores))
        self.threshold_info = {
            "false_alarm_target": rate, "validation_images": len(val_scores),
            "validation_share": self.config.validation_share, "image": image, "pixel": pixel,
            "score_center": self.score_center,
            "note": "set from good validation images held out of train/good (no defect labels used); score >= "
                    "threshold is a defect",
        }
        return self.threshold_info

    # -- scoring ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features (N, C, h, w) -> (N, h, w) distances to the nearest memory-bank patch (not normalised)."""
        if self.scorer is None:
            raise RuntimeError("fit the detector before scoring")
        return self.scorer.distances(features.to(self.device), self.cores).cpu()

    @torch.inference_mode()
    def scored_grids(self, distances: torch.Tensor) -> torch.Tensor:
        """(N, h, w) distances -> the detector's position-aware patch scores, for the image score."""
        return self.scorer.normalize(distances.to(self.device)).cpu()

    @torch.inference_mode()
    def map_grids(self, distances: torch.Tensor) -> torch.Tensor:
        """(N, h, w) distances -> the detector's position-aware patch scores, for the anomaly map."""
        return self.scorer.normalize_map(distances.to(self.device)).cpu()

    def maps(self, patch_scores: torch.Tensor) -> np.ndarray:
        """(N, h, w) patch scores -> (N, H, W) anomaly maps at the input shape."""
        with torch.inference_mode():
            parts = self.scorer.on_cores(self.scorer.post.maps, patch_scores.to(self.device), self.cores)
            return torch.cat(parts).cpu().numpy()

    def image_scores(self, patch_scores: torch.Tensor) -> np.ndarray:
        """(N, h, w) patch scores -> (N,) image scores (the maximum of the grid smoothed by ``score_sigma``)."""
        with torch.inference_mode():
            parts = self.scorer.on_cores(self.scorer.post.image_scores, patch_scores.to(self.device), self.cores)
            return torch.cat(parts).cpu().numpy()

    def score_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Patch features (N, C, h, w) -> image scores (N,) and anomaly maps (N, H, W)."""
        if self.scorer is None:
            raise RuntimeError("fit the detector before scoring")
        with torch.inference_mode():
            maps, scores = self.scorer(features.to(self.device), self.cores)
        return scores.cpu().numpy(), maps.cpu().numpy()

    def score(self, images: torch.Tensor, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, 3, H, W) -> image scores (N,) and anomaly maps (N, H, W), in batches."""
        parts = [self.score_features(self.extract(batch)) for batch in _batches(images, self.config.batch_size)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def normalized(self, scores: np.ndarray) -> np.ndarray:
        """Image scores mapped so that the threshold is 0.5 (a typical good image 0, clipped to [0, 1])."""
        return normalized_scores(scores, self.image_threshold, self.score_center)

    # -- the detector file --------------------------------------------------------------------------------------
    def state(self) -> dict:
        """The detector as a plain dict of tensors, numbers and strings (loadable with ``weights_only=True``)."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "config": self.config.as_dict(),
            "input_shape": list(self.input_shape),
            "weights": self.weights,
            "extractor": {k: v.cpu() for k, v in self.extractor.state_dict().items()},
            "bank": self.bank,
            "whitening": None if self.whitening is None else {"mean": self.whitening[0],
                                                              "transform": self.whitening[1]},
            "bank_size_before_coreset": self.bank_size_before_coreset,
            "coreset_radius": self.coreset_radius,
            "image_threshold": self.image_threshold,
            "pixel_threshold": self.pixel_threshold,
            "score_center": self.score_center,
            "threshold_info": self.threshold_info,
            "position": None if self.position is None else {
                **self.position, "loc": self.scorer.loc.cpu(), "spread": self.scorer.spread.cpu(),
                "map_spread": self.scorer.map_spread.cpu()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted detector atomically; the backbone's used layers travel with it."""
        return atomic_write(path, lambda fh: torch.save(self.state(), fh))

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu", runtime: str = "auto") -> PatchCore:
        """Read a file written by ``save``; a UserError if it is missing, damaged or not such a file."""
        path = Path(path).expanduser()
        remake = "fit one again with python anomaly.py (it is saved under <out>/detectors/)"
        state = load_torch_file(path, "detector", f"{remake} and pass that file to --load",
                                "pass a file written by anomaly.py")
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT:
            raise UserError(f"{path} is not an inspectkit PatchCore detector file; pass a file written by anomaly.py")
        version = state.get("version")
        if version in OLD_VERSIONS:
            state = _with_old_scoring(state, version)
        elif version != FILE_VERSION:
            raise UserError(f"{path} is a version {state.get('version')} detector file; this inspectkit reads "
                            f"version {FILE_VERSION}: {remake}")
        problem = state_problem(state)
        if problem:
            raise UserError(f"detector file {path} is damaged ({problem}); {remake}")
        config = PatchCoreConfig(**state["config"])
        try:
            extractor = extractor_from_state(config.arch, config.layers, config.stride, state["extractor"],
                                             config.pad)
        except (RuntimeError, KeyError, ValueError, UserError) as exc:
            raise UserError(f"detector file {path} is damaged or incompatible ({str(exc)[:100]}); {remake}") \
                from None
        detector = cls(extractor, config, state["weights"], device, runtime)
        detector.input_shape = tuple(state["input_shape"])
        detector.bank = state["bank"]
        whitened = state.get("whitening")
        detector.whitening = None if whitened is None else (whitened["mean"], whitened["transform"])
        detector.bank_size_before_coreset = state["bank_size_before_coreset"]
        detector.coreset_radius = state["coreset_radius"]
        detector.image_threshold = state["image_threshold"]
        detector.pixel_threshold = state["pixel_threshold"]
        detector.score_center = state["score_center"]
        detector.threshold_info = state["threshold_info"]
        position = state.get("position")
        if position is not None:
            detector.position = {k: v for k, v in position.items() if k not in ("loc", "spread", "map_spread")}
            detector._set_scorer(position["loc"], position["spread"], position["map_spread"])
        else:
            detector._set_scorer()
        return detector


def _with_old_scoring(state: dict, version: int) -> dict:
    """A file of an older version as this version's state with the scoring it was fitted with: version 5 maps
    with the image score's spread; version 4 also without whitening; version 3 also plain nearest neighbour."""
    config = dict(state.get("config", {}))
    position = state.get("position")
    if isinstance(position, dict) and "spread" in position:
        position = {**position, "map_spread": position["spread"]}
        if config.get("position_norm", "cell") == "cell":
            config["map_scale_power"] = config.get("scale_power", DEFAULT_SCALE_POWER)
    state = {**state, "config": config, "position": position}
    if version <= 4:
        state = {**state, "config": {**config, "whiten": 0.0}, "whitening": None}
    if version == 3:
        state = {**state, "config": {**state["config"], "position_norm": "none"}, "position": None}
    return state


def _batches(images: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    for start in range(0, len(images), size):
        yield images[start:start + size]
