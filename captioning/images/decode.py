"""The one path from image bytes to model-ready pixels, shared by training and inference.

``load_image`` decodes with Pillow, refuses what it should refuse (unknown
formats, images whose header claims too many pixels, truncated or corrupt
files), applies EXIF orientation, flattens every mode to RGB uint8 and resizes
to the model's square input. Normalisation (``preprocess_input`` or dataset
mean/std) happens inside the model, so the bundle carries it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Formats we decode. Anything else Pillow can open (PSD, ICO, TIFF, EPS...) is refused:
# a smaller attack surface, and formats the training data never contained.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})

# Never decode a truncated file into a half-grey image: it must become an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(ValueError):
    """An image that cannot be captioned; ``error_type`` names the cause for error rows."""

    error_type = "ImageDecodeError"


class EmptyImageError(ImageDecodeError):
    error_type = "EmptyFile"


class UnidentifiedImageFormatError(ImageDecodeError):
    error_type = "UnidentifiedImage"


class UnsupportedImageFormatError(ImageDecodeError):
    error_type = "UnsupportedFormat"


class ImageTooLargeError(ImageDecodeError):
    error_type = "ImageTooLarge"


class CorruptImageError(ImageDecodeError):
    error_type = "CorruptImage"


@dataclass(frozen=True)
class DecodedImage:
    """Model-ready pixels plus the original (EXIF-oriented) size."""

    pixels: np.ndarray  # uint8, [size, size, 3]
    width: int
    height: int


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the type's range, not by clipping.
        values = np.asarray(image, dtype=np.uint32 if image.mode == "I" else np.uint16)
        shift = 8 if image.mode != "I" or values.max(initial=0) > 255 else 0
        if image.mode == "I" and values.max(initial=0) > 65535:
            shift = 24
        image = Image.fromarray((values >> shift).astype(np.uint8), mode="L")
    elif image.mode == "F":
        values = np.clip(np.asarray(image, dtype=np.float32), 0, 255)
        image = Image.fromarray(values.astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def _sniff_format(data: bytes) -> str | None:
    """The format a file's magic bytes claim, to tell "corrupt PNG" from "not an image"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


# EXIF orientations 5-8 turn the picture on its side.
_SIDEWAYS_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        orientation = 1
    return (height, width) if orientation in _SIDEWAYS_ORIENTATIONS else (width, height)


def open_image(
    data: bytes, max_pixels: int, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``data`` to an oriented RGB Pillow image, or raise ImageDecodeError.

    Returns the image and the original (oriented) width and height. The pixel limit
    is checked from the header, before any pixel is decoded. With ``draft_size``, a
    JPEG is decoded directly at the smallest 1/2, 1/4 or 1/8 scale that still covers
    ``draft_size`` pixels: far less work for large photos, same result after resizing.
    """
    if not data:
        raise EmptyImageError("file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        claimed = _sniff_format(data)
        if claimed:
            raise CorruptImageError(f"{claimed} file with a corrupt header") from None
        head = data[:16].lstrip().lower()
        hint = " (looks like HTML)" if head.startswith((b"<!doc", b"<html")) else ""
        raise UnidentifiedImageFormatError(f"not a recognised image{hint}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(str(error)) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(f"cannot read image header: {error}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageFormatError(f"format {image.format} is not supported")
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
        )
    try:
        original_size = _oriented_size(image)
        if draft_size is not None and image.format == "JPEG":
            image.draft(image.mode, (draft_size, draft_size))
        image.seek(0)  # animated GIF/WebP: the first frame
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image), original_size
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise CorruptImageError(f"cannot decode pixels: {error}") from None


def load_image(data: bytes, image_size: int, max_pixels: int = 50_000_000) -> DecodedImage:
    """Bytes -> square RGB uint8 pixels of ``image_size``, plus the original size."""
    image, (width, height) = open_image(data, max_pixels, draft_size=image_size)
    return DecodedImage(pixels=resize(image, image_size), width=width, height=height)


def resize(image: Image.Image, image_size: int) -> np.ndarray:
    """Stretch to a square of ``image_size`` (as InceptionV3 was trained) and return uint8."""
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)
