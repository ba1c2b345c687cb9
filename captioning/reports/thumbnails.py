"""Small JPEG thumbnails of the images in a report, or the reason an image cannot be shown.

Bytes are read through ``captioning.storage`` (local or ``gs://``) and decoded by the
project's one decode path, so an image the pipeline refuses is refused here with
the same error type. Reading runs in threads: the time goes to storage round
trips and to Pillow, which releases the GIL while it decodes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from captioning import storage
from captioning.images.decode import ImageDecodeError, open_image

THUMBNAIL_PIXELS = 160
MAX_PIXELS = 50_000_000  # the decoder's default: refuse decompression bombs here too


@dataclass(frozen=True)
class Thumbnail:
    """A JPEG thumbnail, or ``problem`` saying why the image cannot be shown."""

    jpeg: bytes | None
    width: int = 0
    height: int = 0
    problem: str | None = None

    def data_uri(self) -> str:
        assert self.jpeg is not None, "no thumbnail to embed"
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg).decode("ascii")


def _read_problem(error: Exception) -> str:
    # google-api-core errors carry the useful text in .message; OSError in str().
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"cannot read file: {message.strip().splitlines()[0]}"


def make_thumbnail(uri: str, size: int = THUMBNAIL_PIXELS) -> Thumbnail:
    try:
        data = storage.read_bytes(uri)
    except Exception as error:  # noqa: BLE001 - OSError, or any google-api-core error for gs://
        return Thumbnail(None, problem=_read_problem(error))
    try:
        image, _ = open_image(data, MAX_PIXELS, draft_size=size)
    except ImageDecodeError as error:
        return Thumbnail(None, problem=f"{error.error_type}: {error}")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=82, optimize=True)
    return Thumbnail(buffer.getvalue(), image.width, image.height)


def make_thumbnails(
    uris: Iterable[str], size: int = THUMBNAIL_PIXELS, workers: int = 8
) -> dict[str, Thumbnail]:
    """A thumbnail (or problem) per distinct URI."""
    distinct = list(dict.fromkeys(uris))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = pool.map(lambda uri: make_thumbnail(uri, size), distinct)
        return dict(zip(distinct, made, strict=True))
