"""Safe image opening: decompression bombs refused with a reason, high bit depths scaled (not clipped) to 8 bits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inspectkit.errors import UserError
from inspectkit.imageio import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_SIDE,
    BadImage,
    find_image_files,
    list_image_files,
    open_image,
    read_image_folder,
)
from tests.imagefiles import write_png16_rgb, write_png_claiming


def test_16_bit_grey_png_is_scaled_by_its_bit_depth(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"  # the case Pillow's convert("RGB") turns almost all white
    image = open_image(path)
    assert image.mode == "L" and image.info["source_mode"] == "I;16"
    values = np.asarray(image).astype(int)
    assert np.abs(values - ramp / 65535 * 255).max() <= 0.5 + 1e-9
    assert (values == 255).mean() < 0.01  # Pillow's clip would make 99.6 % of it 255
    rgb = np.asarray(image.convert("RGB"))
    assert np.array_equal(rgb[..., 0], values) and np.array_equal(rgb[..., 2], values)


def test_16_bit_rgb_png_keeps_each_channel_in_scale(tmp_path):
    pixels = np.zeros((4, 5, 3), dtype=np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, 32768, 300
    image = open_image(write_png16_rgb(tmp_path / "rgb16.png", pixels))
    assert image.mode == "RGB" and image.size == (5, 4)
    assert np.asarray(image)[0, 0].tolist() == [255, 128, 1]


def test_float_tiff_in_unit_range_is_scaled_by_255(tmp_path):
    values = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    path = tmp_path / "unit.tif"
    Image.fromarray(values, mode="F").save(path)
    image = open_image(path)
    assert image.mode == "L" and image.info["source_mode"] == "F"
    assert np.abs(np.asarray(image).astype(float) - values * 255).max() <= 0.5 + 1e-6


def test_float_tiff_outside_unit_range_is_scaled_by_its_range(tmp_path):
    values = np.linspace(-10.0, 990.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    path = tmp_path / "wide.tif"
    Image.fromarray(values, mode="F").save(path)
    decoded = np.asarray(open_image(path)).astype(float)
    assert decoded.min() == 0 and decoded.max() == 255
    assert np.abs(decoded - (values + 10) / 1000 * 255).max() <= 0.5 + 1e-4


def test_32_bit_int_image_within_16_bits_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.int32)
    path = tmp_path / "int32.tif"
    Image.fromarray(values, mode="I").save(path)
    assert np.asarray(open_image(path)).tolist() == [[0, 255], [128, 4]]


def test_ordinary_8_bit_images_are_unchanged(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (3, 2), (10, 20, 30)).save(path)
    image = open_image(path)
    assert image.mode == "RGB" and np.asarray(image)[1, 2].tolist() == [10, 20, 30]


def test_a_header_claiming_too_many_pixels_is_a_bad_image_not_pillows_error(tmp_path):
    path = write_png_claiming(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(BadImage) as caught:
        open_image(path)
    assert "900,000,000 pixels" in caught.value.reason and "MAX_IMAGE_PIXELS" in caught.value.reason
    assert not caught.value.transient
    just_over = write_png_claiming(tmp_path / "over.png", MAX_IMAGE_SIDE + 1, MAX_IMAGE_SIDE)
    with pytest.raises(BadImage, match=rf"{MAX_IMAGE_SIDE + 1}x{MAX_IMAGE_SIDE} pixels .*above the limit"):
        open_image(just_over)


def test_empty_garbage_and_unreadable_files_say_why(tmp_path, monkeypatch):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(BadImage, match="zero-byte"):
        open_image(tmp_path / "empty.png")
    with pytest.raises(BadImage, match=r"cannot decode image \(UnidentifiedImageError\)") as caught:
        open_image(tmp_path / "junk.png")
    assert not caught.value.transient

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)  # root ignores chmod, so deny the read itself
    with pytest.raises(BadImage, match="Permission denied") as caught:
        open_image(tmp_path / "junk.png")
    assert caught.value.transient  # the file system, not the bytes: a later run must try again


def test_folder_listing_separates_images_from_other_entries(tmp_path):
    for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    images, others = list_image_files(tmp_path)
    assert [p.name for p in images] == ["a.jpg", "b.PNG"]
    assert sorted(p.name for p in others) == [".hidden.png", "notes.txt", "sub.png"]


def test_a_truncated_file_is_bad_even_after_weasyprint_allowed_truncation(tmp_path, monkeypatch):
    from PIL import ImageFile

    path = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what importing weasyprint does
    with pytest.raises(BadImage, match="cannot decode image"):
        open_image(tmp_path / "cut.png")


def _tree(root):
    """a.png, b/c.jpg, b/d/e.TIFF, b/notes.txt, .hidden/f.png, b/.g.png"""
    for name in ("a.png", "b/c.jpg", "b/d/e.TIFF", ".hidden/f.png", "b/.g.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / name, format="PNG")
    (root / "b" / "notes.txt").write_text("not an image")


def test_one_listing_of_image_folders_flat_or_recursive(tmp_path):
    _tree(tmp_path)
    assert find_image_files(tmp_path) == [tmp_path / "a.png"]
    assert find_image_files(tmp_path, recursive=True) == [tmp_path / "a.png", tmp_path / "b" / "c.jpg",
                                                          tmp_path / "b" / "d" / "e.TIFF"]  # no hidden ones


@pytest.mark.parametrize("recursive", [False, True])
def test_a_folder_without_images_names_the_flag_and_every_suffix(tmp_path, recursive):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("x")
    with pytest.raises(UserError) as exc:
        find_image_files(tmp_path, "--images", recursive=recursive)
    message = str(exc.value)
    assert f"--images {tmp_path}" in message and all(suffix in message for suffix in IMAGE_SUFFIXES)
    assert ("anywhere under" in message) is recursive
    with pytest.raises(UserError, match="is a file, not a folder"):
        find_image_files(tmp_path / "sub" / "notes.txt", recursive=recursive)
    with pytest.raises(UserError, match="does not exist"):
        find_image_files(tmp_path / "missing", recursive=recursive)


def test_reading_a_folder_skips_what_does_not_decode(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    files, decoded, skipped = read_image_folder(tmp_path, lambda path: open_image(path).size)
    assert files == [tmp_path / "good.png"] and decoded == [(4, 4)]
    assert [(path.name, "cannot decode" in reason) for path, reason in skipped] == [("broken.png", True)]
