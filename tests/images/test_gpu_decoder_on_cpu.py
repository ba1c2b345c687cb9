"""The GPU decoder's own code path, run on nvImageCodec's CPU backend.

Everything but the hardware runs: the probe's routing, one nvImageCodec batch call,
the DLPack hand-over to the Keras backend, the grouping by size and the Pillow-like
resize. Both decoders here are libjpeg-turbo, so what differs from ``load_image`` is
the resize alone.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from captioning.images.decode import load_image
from captioning.images.gpu_decode import GpuJpegDecoder
from tests.images import awkward_files

pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec is not installed (.[dev] has it)")


def _photo(width: int, height: int, seed: int, **save) -> bytes:
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(4))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def test_friendly_jpegs_decode_like_pillow_and_the_rest_go_back():
    decoder = GpuJpegDecoder(backends=("cpu",))
    sizes = [(640, 480), (500, 375), (1600, 1200), (640, 480)]
    friendly = [_photo(width, height, seed) for seed, (width, height) in enumerate(sizes)]
    refused = [
        _photo(640, 480, 5, progressive=True),
        awkward_files.cmyk_jpeg(),
        awkward_files.exif_rotated_jpeg(),
        awkward_files.png(),
        awkward_files.truncated_jpeg(),
        b"not an image",
    ]
    items = [*friendly, *refused]
    results = decoder.decode_batch(items, 299)
    assert all(result is None for result in results[len(friendly) :])
    for data, result in zip(friendly, results, strict=False):
        expected = load_image(data, 299)
        assert result is not None
        assert (result.width, result.height) == (expected.width, expected.height)
        assert result.pixels.shape == (299, 299, 3) and result.pixels.dtype == np.uint8
        difference = np.abs(result.pixels.astype(np.int16) - expected.pixels.astype(np.int16))
        assert difference.mean() < 1.0, difference.mean()
    assert decoder.stats["gpu"] == len(friendly)
