"""Model-ready pixels re-encoded as a small JPEG, for ``--right-fit`` jobs.

With right fitting, CPU workers decode what the GPU's JPEG decoder cannot take (PNG,
GIF, CMYK, progressive, EXIF-rotated files...) and the GPU workers caption. Between
the two pools the image crosses as a 299 px JPEG (about 30 KB) rather than raw pixels
(262 KB per image): the shuffle between worker pools is what right fitting pays for.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from captioning.images.decode import load_image

# High enough that the model sees what the direct path sees, to within JPEG noise.
QUALITY = 95


@dataclass(frozen=True)
class EncodedImage:
    """A square model-input JPEG plus the original (EXIF-oriented) size."""

    jpeg: bytes
    width: int
    height: int


def load_image_as_jpeg(data: bytes, image_size: int, max_pixels: int) -> EncodedImage:
    """Decode and resize like ``load_image``, then re-encode as a baseline RGB JPEG."""
    decoded = load_image(data, image_size, max_pixels)
    buffer = io.BytesIO()
    # 4:4:4 and no progressive scan: a file the GPU decoder takes in its batch.
    Image.fromarray(decoded.pixels).save(buffer, "JPEG", quality=QUALITY, subsampling=0)
    return EncodedImage(buffer.getvalue(), decoded.width, decoded.height)
