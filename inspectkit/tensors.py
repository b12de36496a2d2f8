"""The classifier's input tensors: a category's images decoded once into one uint8 tensor, their views (the 8
flips/90-degree rotations, colour-jittered in training), and the bank of frozen-trunk features over those views that
training draws its batches from."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as v2
from tqdm import tqdm

from .cache import DecodeCache
from .classifier import Classifier, inference_trunk
from .data import Category
from .models import normalize

EVAL_BATCH = 32  # images per batch through the trunk (or the whole model) when nothing is trained


def load_images(category: Category, files: Sequence[str], size: int, cache: DecodeCache,
                progress: bool = True) -> torch.Tensor:
    """uint8 tensor (N, 3, size, size) of the category's ``files``, each decoded at most once per size."""
    tensors = [cache.image_tensor(category.root / f, size)
               for f in tqdm(files, desc=f"images at {size} px", unit="img", leave=False, disable=not progress)]
    return torch.stack(tensors)


def augment_view(image: torch.Tensor, view: int, jitter: v2.Transform | None) -> torch.Tensor:
    """View ``view`` of a uint8 (3, H, W) image: one of the 8 flips/90-degree rotations, then colour jitter.

    View 0 is the image itself; views 1..7 cover the rest of the dihedral group, later views repeat it.
    """
    out = torch.rot90(image, view % 4, dims=(1, 2))
    if (view // 4) % 2:
        out = torch.flip(out, dims=(2,))
    if view > 0 and jitter is not None:
        out = jitter(out)
    return out.contiguous()


def trunk_feature_bank(model: Classifier, images: torch.Tensor, views: int, seed: int, device: torch.device,
                       augment: bool, progress: bool = True) -> torch.Tensor:
    """Trunk outputs of every image in ``views`` augmented versions: float tensor (views, N, C, h, w).

    Computing the frozen trunk once per view is what makes fine-tuning fast on a CPU; a batch-norm-folded,
    channels-last copy of it computes the same outputs (to float rounding) about twice as fast.
    """
    jitter = v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05) if augment else None
    torch.manual_seed(seed)
    model.eval()
    trunk = inference_trunk(model.trunk).to(device)
    bank = []
    with tqdm(total=views * len(images), desc="trunk features", unit="img", leave=False,
              disable=not progress) as bar:
        for view in range(views):
            outputs = []
            for start in range(0, len(images), EVAL_BATCH):
                batch = torch.stack([augment_view(img, view, jitter) for img in images[start:start + EVAL_BATCH]])
                with torch.no_grad():
                    x = normalize(batch.to(device)).contiguous(memory_format=torch.channels_last)
                    outputs.append(trunk(x).contiguous().cpu())
                bar.update(len(batch))
            bank.append(torch.cat(outputs))
    return torch.stack(bank)
