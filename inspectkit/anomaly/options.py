"""anomaly.py's own flags: the detector's, one per ``PatchCoreConfig`` field a user sets, named after it
(kebab-case), its default read from it, and the config built from them, where every value is checked; and those of
the modes that act on a saved detector (scoring a folder, exporting), with the flags each mode reads."""

from __future__ import annotations

import argparse

from ..cli import seed
from ..errors import UserError
from ..models import check_arch
from .config import PatchCoreConfig, bad_validation_share
from .coreset import SAMPLERS
from .features import DEFAULT_LAYERS
from .position import MODES as POSITION_MODES
from .runtime import RUNTIMES


def add_detector_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The ``detector`` group: every flag that sets a field of ``PatchCoreConfig`` (``config_from_args``), and the
    switches of a fitting run (the baseline, the figures)."""
    group = parser.add_argument_group("detector")
    group.add_argument("--image-size", type=int, default=PatchCoreConfig.image_size,
                       help="side of the square of the same area as the model input (the aspect ratio is kept)")
    group.add_argument("--coreset-ratio", type=float, default=PatchCoreConfig.coreset_ratio,
                       help="share of the good patches kept in the memory bank, in (0, 1]")
    group.add_argument("--max-bank", type=int, default=PatchCoreConfig.max_bank,
                       help="most patches in the memory bank, whatever the dataset size (bounds memory and time)")
    group.add_argument("--sampler", default=PatchCoreConfig.sampler, choices=list(SAMPLERS),
                       help="coreset sampler: grouped_greedy and subsample_greedy are approximate k-center, greedy "
                            "and pruned_greedy exact, random for comparison")
    layer_defaults = "; ".join(f"{arch}: {','.join(layers)}" for arch, layers in DEFAULT_LAYERS.items())
    group.add_argument("--layers", default=None,
                       help="comma-separated backbone stages (torchvision graph node names), e.g. layer2,layer3; "
                            f"if not given, per --arch: {layer_defaults}")
    group.add_argument("--pad", type=int, default=PatchCoreConfig.pad,
                       help="pixels mirrored around each image before the backbone (a multiple of 8), so that "
                            "zero padding never decides a border patch; 0 to switch off")
    group.add_argument("--score-sigma", type=float, default=PatchCoreConfig.score_sigma,
                       help="Gaussian smoothing of the patch-score grid, in cells, before its maximum becomes the "
                            "image score")
    group.add_argument("--position-norm", default=PatchCoreConfig.position_norm, choices=list(POSITION_MODES),
                       help="cell: score each patch against how the held-out good images score at that position "
                            "(edges that vary from image to image stop deciding the image score); none: plain "
                            "nearest-neighbour distance, the scoring before")
    group.add_argument("--scale-power", type=float, default=PatchCoreConfig.scale_power,
                       help="with --position-norm cell: how far each position's own spread divides its score, "
                            "0 (none: location only) to 1 (full standardisation), for the image score")
    group.add_argument("--map-scale-power", type=float, default=PatchCoreConfig.map_scale_power,
                       help="the same for the anomaly map; 0 takes each position's location only and one scale "
                            "for the whole frame, which ranks pixels across positions better")
    group.add_argument("--whiten", type=float, default=PatchCoreConfig.whiten,
                       help="whitening of the features before the nearest-neighbour search, learnt from the good "
                            "patches: each principal direction divided by its standard deviation to the power p; 0 "
                            "plain Euclidean distance, 1 Mahalanobis")
    group.add_argument("--sigma", type=float, default=PatchCoreConfig.sigma,
                       help="Gaussian smoothing of the anomaly map, in pixels")
    group.add_argument("--batch-size", type=int, default=PatchCoreConfig.batch_size, help="images per forward pass")
    group.add_argument("--seed", type=seed, default=PatchCoreConfig.seed,
                       help="seed for the patch pool, the coreset and the random projection")
    group.add_argument("--validation-share", type=float, default=PatchCoreConfig.validation_share,
                       help="share of train/good held out of the memory bank (seeded) to set the thresholds from "
                            "good images only, in (0, 1)")
    group.add_argument("--false-alarm", type=float, default=PatchCoreConfig.false_alarm,
                       help="target false-alarm rate on the held-out good images, in (0, 1): 0.01 flags about 1 in "
                            "100 good images (and pixels) as defective")
    group.add_argument("--runtime", default="auto", choices=list(RUNTIMES),
                       help="what runs the backbone on a CPU: onnxruntime (its graph exported once per backbone, "
                            "weights and input shape, and cached beside the decode cache), torch, or auto "
                            "(onnxruntime when it is installed)")
    group.add_argument("--no-baseline", action="store_true", help="skip the Gaussian (PaDiM-like) baseline")
    group.add_argument("--no-figures", action="store_true",
                       help="skip the heat-map strip, the histogram and the HTML gallery")
    group.add_argument("--screenshot", action="store_true",
                       help="also save a picture of the gallery's top (sorted by score) as "
                            "<out>/figures/anomaly_<category>_gallery.png; needs chromium (apt-get install chromium)")
    return group


# The flags each mode reads; any other flag given is refused (cli.refuse_unused_flags), never silently ignored.
EXPORT_FLAGS = ("load", "export", "export_file")
SCORING_FLAGS = ("load", "images", "save_maps", "out", "device", "batch_size", "runtime")
SAVED_DETECTOR_FLAGS = ("load", "images", "save_maps", "export", "export_file")  # none of them fits a detector


def add_saved_detector_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The flags of the modes that act on a saved detector: ``--load`` with ``--images`` or ``--export``."""
    scoring = parser.add_argument_group("score new images with a saved detector")
    scoring.add_argument("--load", default=None, metavar="FILE",
                         help="a detector file written by an earlier run (under <out>/detectors/)")
    scoring.add_argument("--images", default=None, metavar="DIR",
                         help="with --load: score every image under DIR (recursively) and write "
                              "<out>/predictions_<DIR name>.csv and .json")
    scoring.add_argument("--save-maps", action="store_true",
                         help="with --images: also write an overlay PNG per image to <out>/predictions_<DIR name>/")
    scoring.add_argument("--export", choices=["onnx"], default=None,
                         help="with --load: write the detector as an ONNX model (uint8 RGB in; map and score out)")
    scoring.add_argument("--export-file", default=None, metavar="PATH",
                         help="with --export: where to write it (default: next to the --load file, .onnx)")
    return scoring


def config_from_args(args: argparse.Namespace) -> PatchCoreConfig:
    """The config the flags of ``add_detector_args`` (and ``--arch``) describe; a UserError naming the flag for a
    bad value. ``--arch`` must name a TorchVision model (a detector file's config is checked against the backbone
    it builds instead); a script run sets its thresholds from the held-out share, so ``--validation-share`` > 0."""
    check_arch(args.arch)
    if args.screenshot and (args.no_figures or (args.category == "all" and not args.demo)):
        raise UserError("--screenshot pictures the gallery of one category: it does nothing with "
                        + ("--no-figures" if args.no_figures else "--category all") + "; drop one of them")
    layers = tuple(name.strip() for name in args.layers.split(",") if name.strip()) if args.layers else ()
    config = PatchCoreConfig(arch=args.arch, layers=layers, pad=args.pad, image_size=args.image_size,
                             coreset_ratio=args.coreset_ratio, max_bank=args.max_bank, sampler=args.sampler,
                             sigma=args.sigma, score_sigma=args.score_sigma, batch_size=args.batch_size,
                             seed=args.seed, validation_share=args.validation_share, false_alarm=args.false_alarm,
                             position_norm=args.position_norm, scale_power=args.scale_power,
                             map_scale_power=args.map_scale_power,
                             whiten=args.whiten)
    if config.validation_share == 0:
        raise bad_validation_share(config.validation_share)
    return config
