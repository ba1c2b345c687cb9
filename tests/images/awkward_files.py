"""Builders for awkward and broken image files, shared by decode and pipeline tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _save(image: Image.Image, format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def scene_like(width: int = 96, height: int = 64) -> Image.Image:
    """A left-red, right-blue image, so orientation and colour are checkable."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2 :] = (30, 30, 220)
    return Image.fromarray(pixels)


def jpeg() -> bytes:
    return _save(scene_like(), "JPEG", quality=95)


def png() -> bytes:
    return _save(scene_like(), "PNG")


def bmp() -> bytes:
    return _save(scene_like(), "BMP")


def webp() -> bytes:
    return _save(scene_like(), "WEBP", quality=95)


def grayscale_png() -> bytes:
    return _save(scene_like().convert("L"), "PNG")


def cmyk_jpeg() -> bytes:
    return _save(scene_like().convert("CMYK"), "JPEG", quality=95)


def png_16bit() -> bytes:
    values = np.linspace(0, 65535, 64 * 96, dtype=np.uint16).reshape(64, 96)
    return _save(Image.fromarray(values, mode="I;16"), "PNG")


def palette_with_transparency() -> bytes:
    image = scene_like().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return _save(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    image = scene_like().convert("RGBA")
    image.putalpha(128)
    return _save(image, "PNG")


def animated_gif() -> bytes:
    frames = [scene_like(), Image.new("RGB", (96, 64), (0, 255, 0))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def exif_rotated_jpeg() -> bytes:
    """Stored 96x64 (red left); EXIF orientation 6 says: rotate 90 degrees clockwise to view."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(scene_like(), "JPEG", quality=95, exif=exif.tobytes())


def thin_png() -> bytes:
    return _save(Image.new("RGB", (1, 4000), (10, 200, 10)), "PNG")


def truncated_jpeg() -> bytes:
    data = _save(scene_like(400, 300), "JPEG", quality=95)
    return data[: len(data) // 2]


def html_as_jpg() -> bytes:
    return b"<!DOCTYPE html><html><body>404 Not Found</body></html>"


def png_bad_crc() -> bytes:
    data = bytearray(png())
    # The IHDR chunk's CRC sits at bytes 29-32; flip it.
    data[29] ^= 0xFF
    return bytes(data)


def png_huge_header(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny file whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\0" + b"\0" * (3 * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row))
        + chunk(b"IEND", b"")
    )


def tiff() -> bytes:
    return _save(scene_like(), "TIFF")


def ico() -> bytes:
    """A format Pillow opens but nobody archives photos in: refused."""
    return _save(scene_like(), "ICO")


VALID = {
    "tiff": tiff,
    "jpeg": jpeg,
    "png": png,
    "bmp": bmp,
    "webp": webp,
    "grayscale": grayscale_png,
    "cmyk": cmyk_jpeg,
    "png16": png_16bit,
    "palette_alpha": palette_with_transparency,
    "rgba": rgba_png,
    "animated_gif": animated_gif,
    "exif_rotated": exif_rotated_jpeg,
    "thin": thin_png,
}
BROKEN = {
    "empty": (lambda: b"", "EmptyFile"),
    "truncated_jpeg": (truncated_jpeg, "CorruptImage"),
    "html_as_jpg": (html_as_jpg, "UnidentifiedImage"),
    "png_bad_crc": (png_bad_crc, "CorruptImage"),
    "png_huge_header": (png_huge_header, "ImageTooLarge"),
    "ico": (ico, "UnsupportedFormat"),
}
