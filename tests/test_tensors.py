"""inspectkit/tensors.py: a category's images as one uint8 tensor, the eight views of the square, and the trunk
feature bank over them."""

from __future__ import annotations

import torch

from inspectkit.cache import DecodeCache
from inspectkit.classifier import build_classifier
from inspectkit.data import load_category
from inspectkit.synthetic import make_category
from inspectkit.tensors import augment_view, load_images, trunk_feature_bank


def test_augmented_views_are_the_eight_symmetries_of_the_square():
    image = torch.arange(3 * 5 * 5, dtype=torch.uint8).reshape(3, 5, 5)
    views = [augment_view(image, v, jitter=None) for v in range(8)]
    assert torch.equal(views[0], image)
    assert len({v.numpy().tobytes() for v in views}) == 8
    assert torch.equal(augment_view(image, 8, None), image)
    assert all(sorted(v.flatten().tolist()) == sorted(image.flatten().tolist()) for v in views)


def test_images_load_in_the_order_asked_and_decode_once(tmp_path):
    make_category(tmp_path, "tiny", image_size=40, n_train=3, n_test_good=2, n_per_defect=2, defects=("hole",),
                  seed=0)
    category = load_category(tmp_path, "tiny", progress=False)
    files = [category.relative(s.path) for s in category.samples][:4]
    cache = DecodeCache(disk=False)
    images = load_images(category, files, 32, cache, progress=False)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    backwards = load_images(category, files[::-1], 32, cache, progress=False)
    assert torch.equal(backwards, images.flip(0))
    assert cache.decoded == 4  # the second call decoded nothing


def test_trunk_bank_view_zero_matches_the_whole_model():
    model, _ = build_classifier("mobilenet_v2", "none", 3, train_levels=1, head="linear")
    model.eval()
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    bank = trunk_feature_bank(model, images, views=3, seed=0, device=torch.device("cpu"), augment=True,
                              progress=False)
    assert bank.shape[:2] == (3, 5)
    with torch.no_grad():
        assert torch.allclose(model.from_trunk(bank[0]), model(images), atol=1e-5)
    assert not torch.allclose(bank[1], bank[0])
