"""inspectkit.anomaly.config and options: every value of a detector's config is checked where the config is made,
with a one-line message naming the flag that sets it; the flags build the same config; and the input-shape rule."""

from __future__ import annotations

import pytest

import anomaly
from inspectkit.anomaly.config import PatchCoreConfig
from inspectkit.anomaly.geometry import input_shape
from inspectkit.anomaly.options import config_from_args
from inspectkit.errors import UserError


@pytest.mark.parametrize(("values", "says"), [
    ({"coreset_ratio": 0.0}, "--coreset-ratio must be in (0, 1]"),
    ({"coreset_ratio": 1.5}, "--coreset-ratio must be in (0, 1]"),
    ({"image_size": 16}, "--image-size must be at least 32 pixels; got 16"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"max_bank": 0}, "--max-bank must be at least 1"),
    ({"pad": 8}, "--pad must be 0 or a multiple of 16"),
    ({"pad": -16}, "--pad must be 0 or a multiple of 16"),
    ({"false_alarm": 0.0}, "--false-alarm must be in (0, 1)"),
    ({"false_alarm": 1.0}, "--false-alarm must be in (0, 1)"),
    ({"validation_share": 1.0}, "--validation-share must be in (0, 1)"),
    ({"validation_share": -0.1}, "--validation-share must be in (0, 1)"),
    ({"sigma": -1.0}, "--sigma and --score-sigma must be >= 0"),
    ({"score_sigma": -0.5}, "--sigma and --score-sigma must be >= 0"),
    ({"scale_power": 1.5}, "--scale-power must be in [0, 1]"),
    ({"map_scale_power": -0.5}, "--map-scale-power must be in [0, 1]"),
    ({"position_norm": "none", "map_scale_power": 0.5}, "--map-scale-power does nothing with --position-norm none"),
    ({"whiten": 1.5}, "--whiten must be in [0, 1]"),
    ({"whiten": -0.1}, "--whiten must be in [0, 1]"),
    ({"position_norm": "none", "scale_power": 1.0}, "--scale-power does nothing with --position-norm none"),
    ({"arch": "vgg11"}, "anomaly detection supports --arch"),  # no default stages for it
])
def test_a_bad_value_is_refused_naming_its_flag(values, says):
    with pytest.raises(UserError) as exc:
        PatchCoreConfig(**values)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_the_defaults_and_the_library_only_values_are_accepted():
    config = PatchCoreConfig()
    assert config.layers and config.as_dict()["layers"] == list(config.layers)
    assert PatchCoreConfig(validation_share=0.0).validation_share == 0.0  # no thresholds: the anomaly gate's case
    assert PatchCoreConfig(arch="resnet50", layers=("layer2", "layer3")).layers == ("layer2", "layer3")
    assert PatchCoreConfig(pad=0, position_norm="none").pad == 0


def _args(*argv: str):
    return anomaly.get_args_parser().parse_args(list(argv))


def test_the_flags_build_the_same_config_as_code():
    config = config_from_args(_args("--layers", "features.3, features.6,", "--coreset-ratio", "0.1", "--pad", "0"))
    assert config == PatchCoreConfig(layers=("features.3", "features.6"), coreset_ratio=0.1, pad=0)
    assert config_from_args(_args()) == PatchCoreConfig()  # every flag's default is the config's


@pytest.mark.parametrize(("argv", "says"), [
    (("--validation-share", "0"), "--validation-share must be in (0, 1), e.g. 0.01 for 1 %; got 0.0"),
    (("--arch", "resnet_nonsense"), "unknown --arch 'resnet_nonsense'"),
])
def test_a_script_run_needs_thresholds_and_a_torchvision_arch(argv, says):
    with pytest.raises(UserError, match=says.replace("(", r"\(").replace(")", r"\)")):
        config_from_args(_args(*argv))


def test_the_detector_shape_keeps_the_training_images_aspect_ratio():
    config = PatchCoreConfig(image_size=320)
    sizes = [(1130, 460)] * 3 + [(460, 1130)]  # (width, height): the median aspect ratio wins
    assert config.detector_shape(sizes) == input_shape(sizes, 320) == (192, 512)
    assert PatchCoreConfig(image_size=128).detector_shape([(64, 64)]) == (128, 128)
