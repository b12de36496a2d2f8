"""What defines a detector: ``PatchCoreConfig``, checked once where it is made, and the input-shape rule that turns
its ``image_size`` into the (height, width) every image of a category is read at.

A config is made from the command line (``options.config_from_args``), in code, or from a detector file
(``PatchCore.load``): every value is checked here, and a bad one is a ``UserError`` naming the flag that sets it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from ..errors import UserError
from .coreset import DEFAULT_PROJECTION_DIM, DEFAULT_SAMPLER
from .features import DEFAULT_PAD, DEFAULT_STRIDE, default_layers
from .geometry import input_shape
from .maps import DEFAULT_SCORE_SIGMA, DEFAULT_SIGMA
from .position import DEFAULT_MAP_SCALE_POWER, DEFAULT_SCALE_POWER
from .threshold import DEFAULT_FALSE_ALARM, DEFAULT_VALIDATION_SHARE
from .whitening import DEFAULT_WHITEN

MIN_IMAGE_SIZE = 32
PAD_MULTIPLE = 16  # the deepest stage's stride: a margin of whole cells of every stage


@dataclass
class PatchCoreConfig:
    """Everything that defines a detector; copied into the results JSON and the detector file. The defaults were
    chosen by measurement on bottle, screw and synthetic categories (bench/anomaly_ablation.py).

    ``validation_share`` 0 holds nothing out, so the detector gets no thresholds: for a caller that sets its own
    (the classifier's anomaly gate); a run of anomaly.py needs one in (0, 1)."""

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
    position_norm: str = "cell"  # "cell": scores against the held-out good images' per-position scores; "none"
    scale_power: float = DEFAULT_SCALE_POWER
    map_scale_power: float = DEFAULT_MAP_SCALE_POWER  # the same for the anomaly map (position.py)
    whiten: float = DEFAULT_WHITEN  # power of the feature whitening (whitening.py): 0 Euclidean, 1 Mahalanobis

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers) or default_layers(self.arch)  # a UserError for a backbone without them
        if not 0 < self.coreset_ratio <= 1:
            raise UserError(f"--coreset-ratio must be in (0, 1], e.g. 0.02 for 2 %; got {self.coreset_ratio}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise UserError(f"--image-size must be at least {MIN_IMAGE_SIZE} pixels; got {self.image_size}")
        for flag, value in (("--batch-size", self.batch_size), ("--max-bank", self.max_bank)):
            if value < 1:
                raise UserError(f"{flag} must be at least 1; got {value}")
        if self.pad < 0 or self.pad % PAD_MULTIPLE:
            raise UserError(f"--pad must be 0 or a multiple of {PAD_MULTIPLE} (the deepest stage's stride); got "
                            f"{self.pad}")
        if not 0 < self.false_alarm < 1:
            raise UserError(f"--false-alarm must be in (0, 1), e.g. 0.01 for 1 %; got {self.false_alarm}")
        if not 0 <= self.validation_share < 1:
            raise bad_validation_share(self.validation_share)
        if self.sigma < 0 or self.score_sigma < 0:
            raise UserError("--sigma and --score-sigma must be >= 0")
        for flag, value, default in (("--scale-power", self.scale_power, DEFAULT_SCALE_POWER),
                                     ("--map-scale-power", self.map_scale_power, DEFAULT_MAP_SCALE_POWER)):
            if self.position_norm == "none" and value != default:
                raise UserError(f"{flag} does nothing with --position-norm none (plain nearest-neighbour scores); "
                                "drop one of them")
            if not 0 <= value <= 1:
                raise UserError(f"{flag} must be in [0, 1] (0: location only, 1: full standardisation); got {value}")
        if not 0 <= self.whiten <= 1:
            raise UserError(f"--whiten must be in [0, 1] (0: Euclidean distance, 1: Mahalanobis); got {self.whiten}")

    def as_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}

    def detector_shape(self, train_sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
        """The (height, width) this detector reads a category at, from its training images' native (width,
        height) sizes: ``geometry.input_shape`` at ``image_size``. The one rule: the data check stores each image
        at this shape as it decodes it (``prewarm=config.detector_shape``), and the pipeline fits at it."""
        return input_shape(train_sizes, self.image_size)


def bad_validation_share(value: float) -> UserError:
    """The error for a ``--validation-share`` out of range (0 too, where the thresholds are needed)."""
    return UserError(f"--validation-share must be in (0, 1), e.g. 0.01 for 1 %; got {value}")
