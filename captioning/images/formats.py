"""The image formats the decode path accepts, and how it recognises them.

Pillow decodes JPEG, PNG, GIF, BMP, WebP, TIFF and (with libavif, in its wheels) AVIF
itself; HEIC/HEIF comes from pillow-heif's opener, registered here once, on first use,
so that importing the decode module does not load libheif.
"""

from __future__ import annotations

import threading

from PIL import Image, features

# Formats we decode (Pillow's ``Image.format`` names). Anything else Pillow can open (PSD,
# ICO, EPS, PCX...) is refused: a smaller attack surface, and formats nobody archives
# photos in. "HEIF" is pillow-heif's name for HEIC and other HEIF files.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF", "HEIF", "AVIF"})

_registered = False
_register_lock = threading.Lock()


def register_openers() -> None:
    """Make HEIC/HEIF files openable with ``Image.open``; cheap after the first call.

    Pillow's own plugins are loaded first, so its AVIF decoder comes before pillow-heif's
    opener in the order ``Image.open`` tries them: pillow-heif also accepts the generic
    ``mif1`` brand, which AVIF files may carry, and its libheif has no AVIF decoder.
    """
    global _registered
    if _registered:
        return
    with _register_lock:
        if _registered:
            return
        # Imported here: pillow-heif loads libheif and libde265 (~75 ms), which a process
        # that only imports this package (the CLI's --help, the launcher) does not need.
        import pillow_heif

        Image.init()
        # Embedded thumbnails are never used (draft() is for JPEG only), nor depth maps.
        pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        _registered = True


def avif_available() -> bool:
    """Whether this Pillow was built with libavif (its wheels are, from 11.3)."""
    return bool(features.check("avif"))


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)

# ISO-BMFF ``ftyp`` brands (ISO/IEC 23008-12 and the AV1 image format spec).
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)


def _iso_bmff_format(data: bytes) -> str | None:
    """HEIF or AVIF from the ``ftyp`` box that starts every such file; None otherwise.

    The major brand decides when it is specific; a generic ``mif1``/``msf1`` major brand
    defers to the compatible brands, where AVIF files list ``avif``.
    """
    if data[4:8] != b"ftyp":
        return None
    major = data[8:12]
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major not in _HEIF_BRANDS:
        return None  # MP4, QuickTime, JPEG 2000...: not a still image we decode
    if major not in (b"mif1", b"msf1"):
        return "HEIF"  # heic, heix...: HEVC-coded
    box_size = int.from_bytes(data[0:4], "big")
    compatible = data[16 : min(box_size, 256)]
    brands = {compatible[i : i + 4] for i in range(0, len(compatible) - 3, 4)}
    return "AVIF" if brands & _AVIF_BRANDS else "HEIF"


def sniff_format(data: bytes) -> str | None:
    """The format a file's magic bytes claim, to tell "corrupt TIFF" from "not an image"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    found = _iso_bmff_format(data)
    if found:
        return found
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)
