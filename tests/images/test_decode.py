"""The shared decode path: every format and mode to RGB uint8, and clear refusals.

Like big_vision's op tests, decoding is checked both eagerly and inside tf.data
(where training calls it through tf.numpy_function), because the two can differ.
"""

import numpy as np
import pytest
import tensorflow as tf

from captioning.config import AugmentConfig, CaptionerConfig, ImageConfig
from captioning.images.decode import ImageDecodeError, load_image
from captioning.text.vocabulary import Vocabulary
from captioning.training.example_cache import build_cache
from captioning.training.input_pipeline import augment, left_right_swap_table
from tests.images import awkward_files

SIZE = 75


@pytest.mark.parametrize("name", sorted(awkward_files.VALID))
def test_valid_images_become_rgb_uint8(name):
    decoded = load_image(awkward_files.VALID[name](), SIZE)
    assert decoded.pixels.shape == (SIZE, SIZE, 3)
    assert decoded.pixels.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(awkward_files.BROKEN))
def test_broken_images_raise_a_named_error(name):
    make, error_type = awkward_files.BROKEN[name]
    with pytest.raises(ImageDecodeError) as raised:
        load_image(make(), SIZE)
    assert raised.value.error_type == error_type
    assert str(raised.value)


def test_colours_survive_every_colour_mode():
    for name in ("jpeg", "png", "bmp", "webp", "cmyk"):
        pixels = load_image(awkward_files.VALID[name](), SIZE).pixels.astype(int)
        left, right = pixels[:, : SIZE // 3].mean((0, 1)), pixels[:, -SIZE // 3 :].mean((0, 1))
        assert left[0] > 150 and left[2] < 90, (name, left)
        assert right[2] > 150 and right[0] < 90, (name, right)


def test_exif_orientation_is_applied():
    decoded = load_image(awkward_files.exif_rotated_jpeg(), SIZE)
    # Rotated 90 degrees clockwise: the red left half is now on top.
    top, bottom = (
        decoded.pixels[: SIZE // 3].mean((0, 1)),
        decoded.pixels[-SIZE // 3 :].mean((0, 1)),
    )
    assert top[0] > 150 and bottom[2] > 150
    assert (decoded.width, decoded.height) == (64, 96)


def test_transparency_is_composited_onto_white_and_16_bit_keeps_its_range():
    rgba = load_image(awkward_files.rgba_png(), SIZE).pixels.astype(int)
    assert rgba[:, : SIZE // 3, 1].mean() > 100  # half-transparent red over white is pink
    gradient = load_image(awkward_files.png_16bit(), SIZE).pixels
    assert gradient.min() < 10 and gradient.max() > 245


def test_animated_gif_uses_the_first_frame():
    pixels = load_image(awkward_files.animated_gif(), SIZE).pixels.astype(int)
    assert pixels[..., 1].mean() < 100  # the second frame is pure green


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        load_image(awkward_files.png(), SIZE, max_pixels=96 * 64 - 1)
    # 60,000 x 60,000 claimed in a file of a few dozen bytes: refused without decoding.
    with pytest.raises(ImageDecodeError) as raised:
        load_image(awkward_files.png_huge_header(), SIZE)
    assert raised.value.error_type == "ImageTooLarge"


def test_large_jpeg_is_drafted_but_reports_its_original_size():
    big = awkward_files._save(awkward_files.scene_like(1600, 1200), "JPEG", quality=90)
    decoded = load_image(big, SIZE)
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert decoded.pixels.shape == (SIZE, SIZE, 3)


def test_training_cache_holds_exactly_the_eager_pixels(tmp_path):
    """Training reads pixels back from TFRecord shards; they must be the eager decode,
    and a broken file must drop out without shifting the others."""
    names, eager = [], {}
    for name in ("jpeg", "png", "cmyk", "exif_rotated", "palette_alpha"):
        (tmp_path / f"{name}.img").write_bytes(awkward_files.VALID[name]())
        names.append(f"{name}.img")
        eager[f"{name}.img"] = load_image((tmp_path / f"{name}.img").read_bytes(), SIZE).pixels
    (tmp_path / "broken.jpg").write_bytes(awkward_files.truncated_jpeg())
    names.insert(2, "broken.jpg")
    config = CaptionerConfig(image=ImageConfig(image_size=SIZE))
    cache = build_cache("pixels", tmp_path, names, config, tmp_path / "cache")
    assert cache.images == [n for n in names if n != "broken.jpg"]
    for row, pixels in cache.dataset().as_numpy_iterator():
        np.testing.assert_array_equal(pixels, eager[cache.images[row]])
    again = build_cache("pixels", tmp_path, names, config, tmp_path / "cache")
    assert again.files == cache.files


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_augmentation_keeps_shape_dtype_and_flips_captions(mode):
    """Run eagerly and inside tf.data, because the two can differ (as big_vision tests do)."""
    vocabulary = Vocabulary.build(["a red circle to the left of a blue square right"], 20, 12)
    captions = np.stack([vocabulary.encode("a red circle to the left of a blue square")])
    image = awkward_files.scene_like(SIZE, SIZE)
    pixels = np.asarray(image)
    config = AugmentConfig(flip=True, crop_fraction=0.9, brightness=0.1)
    table = left_right_swap_table(vocabulary)
    tf.random.set_seed(3)
    if mode == "eager":
        outputs = [augment(pixels, captions, config, table) for _ in range(12)]
    else:
        dataset = tf.data.Dataset.from_tensors((pixels, captions)).repeat(12)
        outputs = list(dataset.map(lambda p, c: augment(p, c, config, table)))
    flipped = 0
    for out_pixels, out_captions in outputs:
        assert out_pixels.shape == (SIZE, SIZE, 3) and out_pixels.dtype == tf.uint8
        words = vocabulary.decode(out_captions.numpy()[0])
        red_on_right = out_pixels.numpy()[:, -10:, 0].mean() > out_pixels.numpy()[:, :10, 0].mean()
        # The caption follows the pixels: mirrored image, mirrored words.
        assert ("right" in words) == red_on_right
        flipped += red_on_right
    assert 0 < flipped < 12
