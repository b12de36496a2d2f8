"""The decode cache: one decode per file content and size, shared through the disk between processes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from inspectkit.cache import DecodeCache, content_hash


def test_each_image_is_decoded_once_and_matches_pil(synthetic_root, tmp_path):
    path = synthetic_root / "demo/test/hole/000.png"
    cache = DecodeCache(tmp_path)
    first = cache.image(path, 32)
    again = cache.image(path, 32)
    assert cache.decoded == 1 and again is first
    expected = np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8 and np.array_equal(first, expected)
    assert cache.image_tensor(path, 32).shape == (3, 32, 32)

    fresh = DecodeCache(tmp_path)  # a new process finds it on disk
    assert np.array_equal(fresh.image(path, 32), first) and fresh.decoded == 0
    fresh.image(path, 48)
    assert fresh.decoded == 1  # another size is another entry


def test_masks_are_boolean_and_good_images_have_empty_ones(synthetic_root, tmp_path):
    cache = DecodeCache(tmp_path, disk=False)
    mask = cache.mask(synthetic_root / "demo/ground_truth/hole/000_mask.png", 64)
    assert mask.dtype == bool and mask.any()
    assert not cache.mask(None, 16).any()
    assert not list(tmp_path.iterdir())


def test_changed_content_is_a_new_entry(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    cache = DecodeCache(tmp_path / "c")
    before = content_hash(path)
    assert cache.image(path, 8)[0, 0].tolist() == [10, 20, 30]
    Image.new("RGB", (9, 9), (200, 0, 0)).save(path)  # another size, so the file stat differs too
    assert content_hash(path) != before
    assert cache.image(path, 8)[0, 0].tolist() == [200, 0, 0]


def test_size_may_be_height_width(tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255  # right half white, so a transposed resize would show
    Image.fromarray(pixels).save(path)
    mask_path = tmp_path / "wide_mask.png"
    Image.fromarray(pixels[..., 0]).save(mask_path)
    cache = DecodeCache(tmp_path / "c")
    image = cache.image(path, (10, 30))
    assert image.shape == (10, 30, 3)
    assert image[:, :10].max() == 0 and image[:, -10:].min() == 255
    assert cache.image_tensor(path, (10, 30)).shape == (3, 10, 30)
    mask = cache.mask(mask_path, (10, 30))
    assert mask.shape == (10, 30) and not mask[:, :10].any() and mask[:, -10:].all()
    assert cache.mask(None, (7, 9)).shape == (7, 9)
    assert cache.image(path, 12).shape == (12, 12, 3)
    assert cache.image(path, (12, 12)) is cache.image(path, 12)  # a square tuple is the same entry
    assert DecodeCache(tmp_path / "c").image(path, (10, 30)).shape == (10, 30, 3)  # and from disk


def _entry(folder):
    (entry,) = [p for p in folder.iterdir() if p.suffix == ".npy"]
    return entry


def test_a_damaged_disk_entry_is_discarded_and_rebuilt(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    expected = DecodeCache(tmp_path / "c").image(path, 8)
    entry = _entry(tmp_path / "c")
    for damage in (b"", b"garbage", b"null", b"42"):
        entry.write_bytes(damage)
        cache = DecodeCache(tmp_path / "c")
        assert np.array_equal(cache.image(path, 8), expected) and cache.decoded == 1
    for wrong in (np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8, 3), np.float32), np.array(None, dtype=object)):
        np.save(entry, wrong, allow_pickle=True)
        cache = DecodeCache(tmp_path / "c")
        assert np.array_equal(cache.image(path, 8), expected) and cache.decoded == 1
    assert np.array_equal(np.load(entry), expected)  # and the entry was replaced


def test_an_unwritable_cache_folder_does_not_fail_the_decode(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    (tmp_path / "c").write_text("a file where the cache folder should be")
    assert DecodeCache(tmp_path / "c").image(path, 8)[0, 0].tolist() == [1, 2, 3]


def test_a_bad_image_reaches_the_caller_with_its_reason(tmp_path):
    import pytest

    from inspectkit.imageio import BadImage
    from tests.imagefiles import write_png_claiming

    with pytest.raises(BadImage, match="above the limit"):
        DecodeCache(tmp_path / "c").image(write_png_claiming(tmp_path / "bomb.png", 30000, 30000), 8)


def test_16_bit_grey_is_decoded_in_scale(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(path)  # 32896 / 65535 * 255 = 128
    assert DecodeCache(tmp_path / "c").image(path, 8)[0, 0].tolist() == [128, 128, 128]


def test_entries_decoded_by_an_older_decoder_are_not_served(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(path)
    folder = tmp_path / "c"
    folder.mkdir()
    old_name = f"{content_hash(path)[:32]}_8_rgb.npy"  # how version 1 named it, holding Pillow's clipped decode
    np.save(folder / old_name, np.full((8, 8, 3), 255, dtype=np.uint8))
    cache = DecodeCache(folder)
    assert cache.image(path, 8)[0, 0].tolist() == [128, 128, 128] and cache.decoded == 1


def test_a_prewarmed_entry_is_served_without_decoding_and_an_existing_one_is_kept(tmp_path):
    from inspectkit.imageio import open_image

    path = tmp_path / "wide.png"
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    DecodeCache(tmp_path / "c").prewarm(path, open_image(path), (12, 20))
    DecodeCache(tmp_path / "c").prewarm(path, open_image(path).convert("L"), (12, 20), kind="mask")
    cache = DecodeCache(tmp_path / "c")
    expected = np.asarray(Image.fromarray(pixels).resize((20, 12), Image.Resampling.BILINEAR))
    assert np.array_equal(cache.image(path, (12, 20)), expected)
    assert np.array_equal(cache.mask(path, (12, 20)), DecodeCache(disk=False).mask(path, (12, 20)))
    assert cache.decoded == 0

    DecodeCache(tmp_path / "c").prewarm(path, Image.new("RGB", (50, 30)), (12, 20))  # a stored entry stays
    assert np.array_equal(DecodeCache(tmp_path / "c").image(path, (12, 20)), expected)
