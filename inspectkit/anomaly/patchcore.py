"""The PatchCore-style detector: a coreset memory bank of good patch features, nearest-neighbour patch scores,
anomaly maps, and saving / loading the fitted detector as one plain file.

Fitting streams: each batch of good features gives a seeded random share of its patches to a bounded pool, and
the coreset is picked from the pool; nothing else of the training features is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..models import load_torch_file
from ..results import atomic_write
from .coreset import DEFAULT_PROJECTION_DIM, DEFAULT_SAMPLER, make_sampler
from .cpu import one_thread
from .features import (
    DEFAULT_PAD,
    DEFAULT_STRIDE,
    PatchFeatureExtractor,
    build_extractor,
    default_layers,
    extractor_from_state,
)
from .knn import NearestNeighbourScorer
from .maps import DEFAULT_SCORE_SIGMA, DEFAULT_SIGMA, anomaly_maps, image_scores
from .threshold import (
    DEFAULT_FALSE_ALARM,
    DEFAULT_VALIDATION_SHARE,
    false_alarm_threshold,
    normalized_scores,
    split_validation,
)

FILE_FORMAT = "inspectkit-patchcore"
FILE_VERSION = 3  # 3: thresholds from a good-only validation share replace the test-set F1 threshold
OVERSAMPLE = 10  # the pool holds this many good patches per coreset point (what the sampler picks from)


@dataclass
class PatchCoreConfig:
    """Everything that defines a detector; copied into the results JSON and the detector file. The defaults were
    chosen by measurement on bottle, screw and synthetic categories (bench/anomaly_ablation.py)."""

    arch: str = "mobilenet_v2"
    layers: tuple[str, ...] = ()
    stride: int = DEFAULT_STRIDE
    pad: int = DEFAULT_PAD
    image_size: int = 320
    coreset_ratio: float = 0.02
    max_bank: int = 50_000
    sampler: str = DEFAULT_SAMPLER
    projection_dim: int = DEFAULT_PROJECTION_DIM
    sigma: float = DEFAULT_SIGMA
    score_sigma: float = DEFAULT_SCORE_SIGMA
    batch_size: int = 16
    seed: int = 0
    validation_share: float = DEFAULT_VALIDATION_SHARE
    false_alarm: float = DEFAULT_FALSE_ALARM

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers) or default_layers(self.arch)

    def as_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}


class PatchCore:
    """``fit(good_images)`` builds the memory bank; ``score(images)`` returns ``(image_scores, maps)``.

    Images are uint8 tensors (N, 3, H, W), all of the detector's ``input_shape``. For streaming, the steps are
    public: ``begin_fit`` / ``add_good`` / ``finish_fit`` and ``extract`` / ``patch_scores`` / ``maps``.
    """

    def __init__(self, extractor: PatchFeatureExtractor, config: PatchCoreConfig, weights: dict,
                 device: torch.device | str = "cpu") -> None:
        self.extractor = extractor.to(device)
        self.config = config
        self.weights = weights
        self.device = torch.device(device)
        self.input_shape: tuple[int, int] | None = None
        self.bank: torch.Tensor | None = None
        self.bank_size_before_coreset: int | None = None
        self.pool_size: int | None = None
        self.coreset_radius: float | None = None
        # set from the good-only validation share (threshold.py); None until then
        self.image_threshold: float | None = None
        self.pixel_threshold: float | None = None
        self.score_center: float | None = None
        self.threshold_info: dict = {}
        self._pool_threads: ThreadPoolExecutor | None = None
        self._pool: list[torch.Tensor] = []
        self._pool_rows: np.ndarray | None = None
        self._seen = 0

    @classmethod
    def build(cls, config: PatchCoreConfig, weights: str, device: torch.device | str = "cpu") -> PatchCore:
        """A new, unfitted detector; ``weights`` is ``imagenet``, ``none`` or a state-dict path."""
        extractor, weights_info = build_extractor(config.arch, weights, config.layers, config.stride, config.pad)
        return cls(extractor, config, weights_info, device)

    def extract(self, images: torch.Tensor, desc: str = "features", progress: bool = False) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, C, H/stride, W/stride) float32 patch features on the CPU, in batches.

        On a multi-core CPU, whole batches run side by side, one single-threaded forward pass per core: unlike
        torch's intra-op threads, no core waits at every layer for a core that another program is using.
        """
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        size = max(1, -(-len(images) // workers))
        starts = range(0, len(images), size)
        bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)

        def forward(start: int) -> torch.Tensor:
            features = self.extractor(images[start:start + size]).cpu()
            bar.update(len(features))
            return features

        if workers <= 1 or len(starts) == 1:
            batches = [forward(start) for start in starts]
        else:
            with one_thread():
                batches = list(self._workers(workers).map(forward, starts))
        bar.close()
        return torch.cat(batches)

    def _workers(self, n: int) -> ThreadPoolExecutor:
        """One pool for the detector's life: a new thread per batch would give glibc a new malloc arena each time,
        and the memory freed there is kept (measured: peak RSS grew by 1 GB from 100 to 500 training images)."""
        if self._pool_threads is None or self._pool_threads._max_workers != n:
            self._pool_threads = ThreadPoolExecutor(max_workers=n, thread_name_prefix="features")
        return self._pool_threads

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
        """Pick the coreset from the pool; it becomes the memory bank."""
        if self._seen != self.bank_size_before_coreset:
            raise RuntimeError(f"begin_fit announced {self.bank_size_before_coreset} patches, got {self._seen}")
        pool = torch.cat(self._pool)
        self._pool = []
        sampler = make_sampler(self.config.sampler, self.config.projection_dim, progress=progress)
        chosen = np.sort(sampler.select(pool.numpy(), min(self._n_bank, len(pool)), seed=self.config.seed))
        self.bank = pool[torch.from_numpy(chosen)].clone()
        self.coreset_radius = sampler.radius
        return self

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
            self.calibrate(*self.score(good_images[list(val_idx)]))
        return self

    def calibrate(self, val_scores: np.ndarray, val_maps: np.ndarray) -> dict:
        """Set the image and pixel thresholds from held-out good images' scores and maps, at the false-alarm
        rate ``config.false_alarm``; returns the record of how (threshold.py)."""
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
    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features (N, C, h, w) -> (N, h, w) distances to the nearest memory-bank patch."""
        if self.bank is None:
            raise RuntimeError("fit the detector before scoring")
        n, c, h, w = features.shape
        return NearestNeighbourScorer(self.bank).distances(features.permute(0, 2, 3, 1).reshape(-1, c)).reshape(n, h, w)

    def maps(self, patch_scores: torch.Tensor) -> np.ndarray:
        """(N, h, w) patch scores -> (N, H, W) anomaly maps at the input shape."""
        return anomaly_maps(patch_scores, self.input_shape, self.config.sigma)

    def image_scores(self, patch_scores: torch.Tensor) -> np.ndarray:
        return image_scores(patch_scores, self.config.score_sigma)

    def score_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Patch features (N, C, h, w) -> image scores (N,) and anomaly maps (N, H, W)."""
        patch_scores = self.patch_scores(features)
        return self.image_scores(patch_scores), self.maps(patch_scores)

    def score(self, images: torch.Tensor, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        grids = [self.patch_scores(self.extract(batch)) for batch in _batches(images, self.config.batch_size)]
        patch_scores = torch.cat(grids)
        return self.image_scores(patch_scores), self.maps(patch_scores)

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
            "bank_size_before_coreset": self.bank_size_before_coreset,
            "coreset_radius": self.coreset_radius,
            "image_threshold": self.image_threshold,
            "pixel_threshold": self.pixel_threshold,
            "score_center": self.score_center,
            "threshold_info": self.threshold_info,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted detector atomically; the backbone's used layers travel with it."""
        return atomic_write(path, lambda fh: torch.save(self.state(), fh))

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> PatchCore:
        """Read a file written by ``save``; a UserError if it is missing, damaged or not such a file."""
        path = Path(path).expanduser()
        remake = "fit one again with python anomaly.py (it is saved under <out>/detectors/)"
        state = load_torch_file(path, "detector", f"{remake} and pass that file to --load",
                                "pass a file written by anomaly.py")
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT:
            raise UserError(f"{path} is not an inspectkit PatchCore detector file; pass a file written by anomaly.py")
        if state.get("version") != FILE_VERSION:
            raise UserError(f"{path} is a version {state.get('version')} detector file; this inspectkit reads "
                            f"version {FILE_VERSION}: {remake}")
        problem = _state_problem(state)
        if problem:
            raise UserError(f"detector file {path} is damaged ({problem}); {remake}")
        config = PatchCoreConfig(**state["config"])
        try:
            extractor = extractor_from_state(config.arch, config.layers, config.stride, state["extractor"],
                                             config.pad)
        except (RuntimeError, KeyError, ValueError, UserError) as exc:
            raise UserError(f"detector file {path} is damaged or incompatible ({str(exc)[:100]}); {remake}") \
                from None
        detector = cls(extractor, config, state["weights"], device)
        detector.input_shape = tuple(state["input_shape"])
        detector.bank = state["bank"]
        detector.bank_size_before_coreset = state["bank_size_before_coreset"]
        detector.coreset_radius = state["coreset_radius"]
        detector.image_threshold = state["image_threshold"]
        detector.pixel_threshold = state["pixel_threshold"]
        detector.score_center = state["score_center"]
        detector.threshold_info = state["threshold_info"]
        return detector


def _state_problem(state: dict) -> str | None:
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
    from dataclasses import MISSING

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
    return _parts_problem(built, state["extractor"], bank, tuple(shape))


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


def _batches(images: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    for start in range(0, len(images), size):
        yield images[start:start + size]
