"""TIFF, HEIC and AVIF through the one decode path, and Pillow's warnings kept off stderr.

Every file is made here with Pillow and pillow-heif themselves: a left-red, right-blue
picture (``awkward_files.scene_like``), or two greys, so size, colour and orientation
are all checkable after ``load_image``.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from captioning.images.decode import (
    CorruptImageError,
    ImageDecodeError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    load_image,
)
from captioning.images.formats import register_openers, sniff_format
from tests.images.awkward_files import _save, png_huge_header, scene_like

SIZE = 32
WIDTH, HEIGHT = 96, 64  # scene_like's default
RED, BLUE = (220, 30, 30), (30, 30, 220)

# pillow-heif's encoder, for making HEIC files (decode.py registers the opener lazily).
register_openers()


# === Builders ===


def tiff_lzw() -> bytes:
    return _save(scene_like(), "TIFF", compression="tiff_lzw")


def tiff_jpeg() -> bytes:
    return _save(scene_like(), "TIFF", compression="jpeg", quality=95)


def tiff_multipage() -> bytes:
    """The scene first, then a green page of another size: only the first is used."""
    green = Image.new("RGB", (40, 40), (0, 255, 0))
    return _save(scene_like(), "TIFF", save_all=True, append_images=[green])


def _two_greys_16bit() -> np.ndarray:
    values = np.empty((HEIGHT, WIDTH), np.uint16)
    values[:, : WIDTH // 2], values[:, WIDTH // 2 :] = 60_000, 1_000
    return values


def tiff_16bit_grey() -> bytes:
    return _save(Image.fromarray(_two_greys_16bit()), "TIFF")  # mode I;16


def tiff_16bit_grey_big_endian() -> bytes:
    """A Motorola-order ("MM") TIFF, opened as mode I;16B."""
    samples = _two_greys_16bit().astype(">u2").tobytes()
    return _save(Image.frombytes("I;16B", (WIDTH, HEIGHT), samples), "TIFF")


def tiff_16bit_rgb() -> bytes:
    """Three 16-bit samples per pixel. Pillow has no 16-bit RGB mode to save from, so the
    interleaved samples go in as an I;16 image three times as wide, and libtiff (LZW)
    writes them under tags that say what they are: 3 samples of 16 bits, RGB."""
    pixels = np.empty((HEIGHT, WIDTH, 3), np.uint16)
    pixels[:, : WIDTH // 2] = (60_000, 5_000, 5_000)
    pixels[:, WIDTH // 2 :] = (5_000, 5_000, 60_000)
    samples = Image.fromarray(pixels.reshape(HEIGHT, WIDTH * 3))
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[256], tags[258], tags[262], tags[277] = WIDTH, (16, 16, 16), 2, 3
    return _save(samples, "TIFF", compression="tiff_lzw", tiffinfo=tags)


def tiff_cmyk() -> bytes:
    return _save(scene_like().convert("CMYK"), "TIFF", compression="tiff_lzw")


def heic() -> bytes:
    return _save(scene_like(), "HEIF", quality=95)


def avif() -> bytes:
    return _save(scene_like(), "AVIF", quality=95)


def _rotated_exif() -> bytes:
    """EXIF orientation 6: rotate 90 degrees clockwise to view."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def tiff_header_claiming(width: int, height: int) -> bytes:
    """An 8x8 TIFF whose header claims width x height pixels: a bomb, refused unread."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[256], tags[257] = width, height
    return _save(Image.new("L", (8, 8), 128), "TIFF", tiffinfo=tags)


# name -> (builder, expected mean colour of the left third, of the right third)
ARCHIVE_FORMATS = {
    "tiff_lzw": (tiff_lzw, RED, BLUE),
    "tiff_jpeg": (tiff_jpeg, RED, BLUE),
    "tiff_multipage": (tiff_multipage, RED, BLUE),
    "tiff_16bit_grey": (tiff_16bit_grey, (234,) * 3, (3,) * 3),  # 16 bits >> 8
    "tiff_16bit_grey_big_endian": (tiff_16bit_grey_big_endian, (234,) * 3, (3,) * 3),
    "tiff_16bit_rgb": (tiff_16bit_rgb, (234, 19, 19), (19, 19, 234)),
    "tiff_cmyk": (tiff_cmyk, RED, BLUE),
    "heic": (heic, RED, BLUE),
    "avif": (avif, RED, BLUE),
}


# === Formats ===


@pytest.mark.parametrize("name", sorted(ARCHIVE_FORMATS))
def test_archive_formats_decode_to_size_and_colour(name):
    make, left, right = ARCHIVE_FORMATS[name]
    decoded = load_image(make(), SIZE)
    assert decoded.pixels.shape == (SIZE, SIZE, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height) == (WIDTH, HEIGHT)
    pixels = decoded.pixels.astype(float)
    np.testing.assert_allclose(pixels[:, : SIZE // 3].mean((0, 1)), left, atol=12)
    np.testing.assert_allclose(pixels[:, -SIZE // 3 :].mean((0, 1)), right, atol=12)


def test_pillow_reads_16_bit_rgb_tiff_as_8_bit_rgb():
    """Pillow has no 16-bit RGB mode: it unpacks RGB;16 keeping each sample's high byte,
    the same >> 8 that decode.py applies to 16-bit greyscale."""
    image = Image.open(io.BytesIO(tiff_16bit_rgb()))
    assert image.tag_v2[258] == (16, 16, 16)
    assert image.mode == "RGB"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "TIFF"])
def test_orientation_is_applied_once(fmt):
    """HEIC: pillow-heif applies the container's rotation (as an iPhone writes it) and
    resets EXIF's; AVIF and TIFF: EXIF orientation. Either way turned once, not twice."""
    if fmt == "TIFF":
        data = _save(scene_like(), fmt, tiffinfo={0x0112: 6})
    else:
        data = _save(scene_like(), fmt, quality=95, exif=_rotated_exif())
    decoded = load_image(data, SIZE)
    assert (decoded.width, decoded.height) == (HEIGHT, WIDTH)
    top = decoded.pixels[: SIZE // 3].astype(float).mean((0, 1))
    bottom = decoded.pixels[-SIZE // 3 :].astype(float).mean((0, 1))
    assert top[0] > 150 and bottom[2] > 150, (top, bottom)  # red left half now on top


# === Refusals ===


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("tiff", lambda: _save(scene_like(400, 300), "TIFF")),
        ("tiff_lzw", lambda: _save(scene_like(400, 300), "TIFF", compression="tiff_lzw")),
        ("heic", lambda: _save(scene_like(400, 300), "HEIF")),
        ("avif", lambda: _save(scene_like(400, 300), "AVIF")),
    ],
)
def test_truncated_files_are_corrupt_not_a_crash(name, make):
    data = make()
    for cut in (len(data) // 2, len(data) - 16):
        with pytest.raises(CorruptImageError):
            load_image(data[:cut], SIZE)
    # Cut inside the header: still recognised by its magic bytes, so "corrupt TIFF".
    claimed = {"tiff": "TIFF", "tiff_lzw": "TIFF", "heic": "HEIF", "avif": "AVIF"}[name]
    with pytest.raises(CorruptImageError, match=f"corrupt {claimed}"):
        load_image(data[:24], SIZE)


def test_tiff_pixel_limit_is_checked_from_the_header():
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        load_image(tiff_lzw(), SIZE, max_pixels=WIDTH * HEIGHT - 1)
    # Headers claiming 81 million and 400 million pixels over 64 stored ones: were the
    # pixels decoded, this would be a truncated file (CorruptImage), not ImageTooLarge.
    assert len(tiff_header_claiming(9_000, 9_000)) < 100_000  # the strip table, mostly
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        load_image(tiff_header_claiming(9_000, 9_000), SIZE)
    with pytest.raises(ImageTooLargeError):
        load_image(tiff_header_claiming(20_000, 20_000), SIZE)


def test_pillows_bomb_limit_still_refuses_beyond_a_larger_max_pixels(recwarn):
    """10,000 x 10,000: over Pillow's MAX_IMAGE_PIXELS (it warns) but under 2x (no error)."""
    with pytest.raises(ImageTooLargeError):
        load_image(png_huge_header(10_000, 10_000), SIZE, max_pixels=200_000_000)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("fmt", ["ICO", "EPS", "PCX"])
def test_formats_nobody_archives_photos_in_are_still_refused(fmt):
    with pytest.raises(UnsupportedImageFormatError, match=f"format {fmt}"):
        load_image(_save(scene_like(), fmt), SIZE)


def test_sniffing_reads_tiff_magic_and_iso_bmff_brands():
    assert sniff_format(b"II*\x00" + b"\x00" * 12) == "TIFF"
    assert sniff_format(b"MM\x00*" + b"\x00" * 12) == "TIFF"
    assert sniff_format(heic()[:32]) == "HEIF"
    assert sniff_format(avif()[:32]) == "AVIF"
    # A generic major brand defers to the compatible ones.
    generic = struct.pack(">I", 24) + b"ftypmif1" + b"\x00" * 4 + b"mif1avif"
    assert sniff_format(generic) == "AVIF"
    # An MP4 is an ISO-BMFF file too, but not an image: "not an image", not "corrupt".
    mp4 = struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2"
    assert sniff_format(mp4) is None
    with pytest.raises(ImageDecodeError) as raised:
        load_image(mp4 + b"\x00" * 64, SIZE)
    assert raised.value.error_type == "UnidentifiedImage"


# === Warnings ===


def jpeg_with_corrupt_exif() -> bytes:
    """EXIF whose ImageDescription points past the end of the block: Pillow warns
    "Truncated File Read" reading it, and decodes the pixels fine."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 100
    return _save(scene_like(), "JPEG", quality=95, exif=exif.tobytes()[:60])


def tiff_with_truncated_ifd() -> bytes:
    """An LZW TIFF (libtiff puts the IFD last) cut three entries into its IFD."""
    data = _save(scene_like(400, 300), "TIFF", compression="tiff_lzw")
    (ifd,) = struct.unpack("<I", data[4:8])
    return data[: ifd + 2 + 12 * 3]


def tiff_with_bogus_jpeg_tables() -> bytes:
    """A JPEG-compressed TIFF whose JPEGTables are zeroed: libtiff's JPEG codec fails,
    and libtiff prints that to stderr itself, from C, unless told otherwise."""
    data = _save(scene_like(400, 300), "TIFF", compression="jpeg")
    tables = Image.open(io.BytesIO(data)).tag_v2[347]
    start = data.index(tables)
    return data[:start] + bytes(len(tables)) + data[start + len(tables) :]


def test_a_warning_on_a_good_file_is_logged_not_printed(capfd, recwarn, caplog):
    caplog.set_level(logging.DEBUG, logger="captioning.images")
    decoded = load_image(jpeg_with_corrupt_exif(), SIZE)
    assert (decoded.width, decoded.height) == (WIDTH, HEIGHT)
    assert "Truncated File Read" in caplog.text
    assert [r.levelno for r in caplog.records if r.name == "captioning.images"] == [logging.DEBUG]
    assert len(recwarn) == 0
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (tiff_with_truncated_ifd, "Truncated File Read"),
        (tiff_with_bogus_jpeg_tables, "JPEGLib: Not a JPEG file"),
    ],
)
def test_warnings_of_a_failed_decode_end_in_its_message(make, expected, capfd):
    # Not ``recwarn``: pytest 9 sets Python's "default" filter there (once per location),
    # and explicit filters win over decode.py's "always" for the decoders' warnings.
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        for _ in range(2):  # every time, not only the first
            with pytest.raises(CorruptImageError, match=f"warnings: {expected}"):
                load_image(make(), SIZE)
    assert escaped == []
    assert capfd.readouterr().err == ""


def test_each_thread_keeps_its_own_warnings(capfd):
    """Decoding threads never share one list: each error names its own file's warnings."""
    kinds = {"ifd": tiff_with_truncated_ifd(), "tables": tiff_with_bogus_jpeg_tables()}
    expected = {"ifd": "Truncated File Read", "tables": "JPEGLib"}
    jobs = [name for _ in range(40) for name in ("ifd", "tables")] + ["good"] * 20

    def decode(name: str) -> tuple[str, str]:
        try:
            load_image(kinds.get(name) or jpeg_with_corrupt_exif(), SIZE)
            return name, ""
        except ImageDecodeError as error:
            return name, str(error)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(decode, jobs))
    for name, message in results:
        if name == "good":
            assert message == ""
            continue
        other = expected["tables" if name == "ifd" else "ifd"]
        assert expected[name] in message and other not in message, (name, message)
    assert capfd.readouterr().err == ""


def test_warnings_outside_a_decode_are_left_alone():
    load_image(jpeg_with_corrupt_exif(), SIZE)
    with pytest.warns(UserWarning, match="not from a decoder"):
        warnings.warn("not from a decoder", UserWarning, stacklevel=1)
