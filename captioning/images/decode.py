"""The one path from image bytes to model-ready pixels, shared by training and inference.

``load_image`` decodes with Pillow (HEIC through pillow-heif), refuses what it should
refuse (formats outside ``formats.SUPPORTED_FORMATS``, images whose header claims too
many pixels, truncated or corrupt files), applies EXIF orientation, flattens every mode
to RGB uint8 and resizes to the model's square input. Normalisation (``preprocess_input``
or dataset mean/std) happens inside the model, so the bundle carries it.

Warnings Pillow raises while decoding ("Truncated File Read", "Corrupt EXIF data"...)
never reach the terminal: they are added to the error's message when the image fails,
and logged at DEBUG on ``captioning.images`` when it decodes.
"""

from __future__ import annotations

import ctypes
import io
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from captioning.images.formats import (
    SUPPORTED_FORMATS,
    avif_available,
    register_openers,
    sniff_format,
)

logger = logging.getLogger("captioning.images")

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


# === Warnings: recorded per decode, never printed ===
#
# Pillow reports damaged files it can still read ("Truncated File Read", "Corrupt EXIF
# data") as warnings, which by default go to stderr: hundreds of lines on a big archive.
# ``warnings.catch_warnings`` cannot hold them: it swaps process-wide state and is not
# thread-safe, and decoding runs on threads (inference.py, example_cache.py); there,
# interleaved exits would leave the process recording into a dead list for good and put
# one image's warnings in another's error. Instead one hook takes ``warnings.showwarning``
# (again whenever someone, pytest for one, has swapped it since) and gives a warning
# raised on a decoding thread to that thread's list; any other warning goes where it
# went before. Filters still apply first: a warning they ignore is not recorded either.
# One filter is added, last so that explicit ones still win: the decoders' warnings are
# passed on every time, not once per location as Python's default would, so that each
# broken file's error names its own warnings ("Truncated File Read" is always the same
# text).

_recording = threading.local()
_hook_lock = threading.Lock()
_show_elsewhere = warnings.showwarning  # where warnings raised outside a decode go
_DECODER_MODULES = r"(PIL|pillow_heif)(\.|$)"


def _hooks_installed() -> bool:
    return warnings.showwarning is _show_warning and any(
        getattr(module, "pattern", module) == _DECODER_MODULES
        for _, _, _, module, _ in warnings.filters
    )


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    records = getattr(_recording, "records", None)
    if records is not None:
        records.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
    elif getattr(_recording, "forwarding", False):
        # The hook we forward to called back into ``warnings.showwarning``: print it
        # rather than recurse.
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
    else:
        _recording.forwarding = True
        try:
            _show_elsewhere(message, category, filename, lineno, file, line)
        finally:
            _recording.forwarding = False


@contextmanager
def _recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings this thread raises inside the block instead of showing them."""
    global _show_elsewhere
    if not _hooks_installed():
        with _hook_lock:
            if warnings.showwarning is not _show_warning:
                _show_elsewhere = warnings.showwarning
                warnings.showwarning = _show_warning
            if not _hooks_installed():
                warnings.filterwarnings("always", module=_DECODER_MODULES, append=True)
    outer = getattr(_recording, "records", None)
    records: list[warnings.WarningMessage] = []
    _recording.records = records
    try:
        yield records
    finally:
        _recording.records = outer


# libtiff, inside Pillow's TIFF decoder, prints its errors to stderr itself, from C
# ("JPEGLib: Quantization table 0x00 was not defined."); Pillow raises "decoder error -2"
# but leaves libtiff's default handler in place (it silences only libtiff's warnings).
# This handler makes each message a record of the decoding thread instead, and drops
# messages outside a decode. It is looked up through Pillow's own extension, so it is the
# libtiff Pillow links (its wheels bundle a private copy), not another library's.
_LibtiffHandler = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
_libtiff_handler = None  # the ctypes callback: must outlive libtiff's pointer to it


def _vsnprintf() -> Callable[..., int] | None:
    """libc's vsnprintf, to format a libtiff message with its va_list; None without libc.

    A va_list arrives as one pointer-sized value on the platforms Pillow ships for (a
    pointer, an array, or a struct passed by reference) and goes on to vsnprintf as is.
    """
    if sys.platform not in ("linux", "darwin"):
        return None
    try:
        function = ctypes.CDLL(None).vsnprintf
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


_format_libtiff = _vsnprintf()


def _libtiff_message(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
    try:
        records = getattr(_recording, "records", None)
        if records is None or not fmt:
            return
        text = fmt
        if _format_libtiff is not None:
            buffer = ctypes.create_string_buffer(512)
            _format_libtiff(buffer, len(buffer), fmt, args)
            text = buffer.value
        message = (module + b": " + text if module else text).decode(errors="replace")
        records.append(warnings.WarningMessage(message, UserWarning, "libtiff", 0))
    except BaseException:  # noqa: BLE001 - ctypes would print it to stderr
        pass


def _route_libtiff_errors() -> None:
    global _libtiff_handler
    if _libtiff_handler is not None:
        return
    with _hook_lock:
        if _libtiff_handler is not None:
            return
        _libtiff_handler = _LibtiffHandler(_libtiff_message)
        try:
            imaging = ctypes.CDLL(Image.core.__file__)
            imaging.TIFFSetErrorHandler.restype = ctypes.c_void_p
            imaging.TIFFSetErrorHandler(_libtiff_handler)
        except (OSError, AttributeError):
            pass  # no libtiff symbols to reach (Windows, a Pillow built without libtiff)


def _summarise(records: list[warnings.WarningMessage], limit: int = 3) -> str:
    """The distinct warning texts, in order, each cut short: fit for an error row."""
    texts = list(dict.fromkeys(" ".join(str(r.message).split()) for r in records))
    shown = [text if len(text) <= 120 else text[:117] + "..." for text in texts[:limit]]
    more = f" (+{len(texts) - limit} more)" if len(texts) > limit else ""
    return "; ".join(shown) + more


def open_image(
    data: bytes, max_pixels: int, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``data`` to an oriented RGB Pillow image, or raise ImageDecodeError.

    Returns the image and the original (oriented) width and height. The pixel limit
    is checked from the header, before any pixel is decoded. With ``draft_size``, a
    JPEG is decoded directly at the smallest 1/2, 1/4 or 1/8 scale that still covers
    ``draft_size`` pixels: far less work for large photos, same result after resizing.
    Warnings raised meanwhile end in the error's message, or at DEBUG on success.
    """
    if not data:
        raise EmptyImageError("file is empty (0 bytes)")
    register_openers()
    _route_libtiff_errors()
    with _recorded_warnings() as records:
        try:
            result = _decode(data, max_pixels, draft_size)
        except ImageDecodeError as error:
            if records:
                error.args = (f"{error} (warnings: {_summarise(records)})",)
            raise
    if records:
        logger.debug("decoded despite warnings: %s", _summarise(records, limit=10))
    return result


def _decode(
    data: bytes, max_pixels: int, draft_size: int | None
) -> tuple[Image.Image, tuple[int, int]]:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        claimed = sniff_format(data)
        if claimed == "AVIF" and not avif_available():
            raise UnsupportedImageFormatError("AVIF needs a Pillow built with libavif") from None
        if claimed:
            raise CorruptImageError(f"corrupt {claimed} file: its header cannot be read") from None
        head = data[:16].lstrip().lower()
        hint = " (looks like HTML)" if head.startswith((b"<!doc", b"<html")) else ""
        raise UnidentifiedImageFormatError(f"not a recognised image{hint}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The warning arrives as an exception only where a filter says "error".
        raise ImageTooLargeError(str(error)) from None
    except (OSError, SyntaxError, ValueError, Warning) as error:
        raise CorruptImageError(f"cannot read image header: {error}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageFormatError(f"format {image.format} is not supported")
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImageError(f"image has no pixels ({width}x{height})")
    # Pillow's own bomb limit counts too: it used to turn its DecompressionBombWarning
    # into this error, and a warning is now only recorded (and filters may drop it).
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {limit:,}"
        )
    try:
        drafted = draft_size is not None and image.format == "JPEG"
        header_size = _oriented_size(image) if drafted else None
        if drafted:
            image.draft(image.mode, (draft_size, draft_size))
        if image.format != "HEIF":
            # Animated GIF/WebP, multi-page TIFF: the first frame. A HEIF file opens on its
            # primary image, which need not be image 0.
            image.seek(0)
        image.load()
        # Turns the picture upright, once: Pillow's TIFF plugin (on load) and pillow-heif
        # (on open, from the container's rotation) turn theirs themselves and clear the
        # EXIF orientation, which leaves this nothing to do for them.
        image = ImageOps.exif_transpose(image)
        # The upright picture's size is the original's, unless draft() decoded it smaller;
        # then the header's, turned as EXIF says. Not the header's for every format: TIFF
        # and HEIF report an already upright size there.
        return _to_rgb(image), header_size or image.size
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, Warning) as error:
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
