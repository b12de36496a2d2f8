"""Rename a torchvision ``mobilenet_v2`` state dict into timm's ``mobilenetv2_100`` names, so that anomalib's timm
feature extractor runs on the same offline weights as our detector; checks that both networks give the same logits.

Runs where timm is installed (the scratch anomalib virtualenv); the output is a weights file: keep it out of git.

Example:
    bench/.venv-anomalib/bin/python bench/timm_weights.py \
        --weights ../shared/weights/mobilenet_v2-qnnpack_dequant-e48290fe.pth --out /tmp/mobilenetv2_100_from_tv.pth
"""

from __future__ import annotations

import argparse
import json

import torch

# timm's stages of mobilenetv2_100 (blocks.0 .. blocks.6) hold this many of torchvision's features.1 .. features.17
STAGE_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
# torchvision module path inside one inverted-residual block -> timm's name
EXPANDED = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
            "conv.2": "conv_pwl", "conv.3": "bn3"}
DEPTHWISE_ONLY = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}  # features.1
OUTER = {"features.0.0": "conv_stem", "features.0.1": "bn1", "features.18.0": "conv_head", "features.18.1": "bn2",
         "classifier.1": "classifier"}


def timm_name(key: str) -> str:
    """One torchvision ``mobilenet_v2`` parameter name -> its ``mobilenetv2_100`` name."""
    module, _, leaf = key.rpartition(".")
    if module in OUTER:
        return f"{OUTER[module]}.{leaf}"
    _, index, inner = module.split(".", 2)  # features.<index>.<inner>
    block = int(index) - 1
    for stage, depth in enumerate(STAGE_DEPTHS):
        if block < depth:
            names = DEPTHWISE_ONLY if stage == 0 else EXPANDED
            return f"blocks.{stage}.{block}.{names[inner]}.{leaf}"
        block -= depth
    raise KeyError(key)


def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {timm_name(key): value for key, value in state.items()}


def max_logit_difference(tv_state: dict, timm_state: dict, seed: int = 0) -> float:
    """Largest |logit difference| of the two networks (eval mode) on a random batch."""
    import timm
    import torchvision

    tv_model = torchvision.models.mobilenet_v2()
    tv_model.load_state_dict(tv_state, strict=True)
    timm_model = timm.create_model("mobilenetv2_100", pretrained=False)
    timm_model.load_state_dict(timm_state, strict=True)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((tv_model.eval()(x) - timm_model.eval()(x)).abs().max())


def main(args: argparse.Namespace) -> None:
    tv_state = torch.load(args.weights, map_location="cpu", weights_only=True)
    timm_state = convert(tv_state)
    diff = max_logit_difference(tv_state, timm_state)
    torch.save(timm_state, args.out)
    print(json.dumps({"out": args.out, "tensors": len(timm_state), "max_abs_logit_diff": diff}))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="torchvision mobilenet_v2 state_dict file")
    parser.add_argument("--out", required=True, help="where to write the timm mobilenetv2_100 state_dict")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
