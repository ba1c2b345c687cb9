"""A header probe that says which files the GPU JPEG decoder may take; Pillow keeps the rest.

``probe_jpeg`` walks a JPEG's marker segments up to the first scan (pure Python, no
dependencies, microseconds per file: only headers are parsed, and one ``bytes.rfind``
checks that an EOI marker follows the scan). A file is *GPU-friendly* when decoding it
with nvImageCodec cannot differ from ``load_image`` in anything but rounding:

- a JPEG (SOI) with one baseline or extended-sequential Huffman frame (SOF0/SOF1),
  8-bit samples, 1 or 3 components, chroma subsampling nvJPEG supports, every component
  in the one scan, and an EOI after it (a truncated file must stay an error row, and
  nvJPEG could turn it into a half-grey picture instead);
- no EXIF or XMP orientation that turns or flips the picture (Pillow applies it; keeping
  those on the CPU path keeps their rotation exactly as it is);
- not CMYK/YCCK, not RGB-coded (Adobe transform 0 or component ids "R","G","B": the
  nvImageCodec JPEG parser assumes 3 components are always YCbCr), not an MPO (Pillow
  opens those without DCT scaling, so the resize geometry differs);
- within ``max_pixels``, like the limit ``load_image`` enforces.

Anything else, garbage included, is "not friendly" with a reason, never an exception:
Pillow then decodes it, or raises the usual ``ImageDecodeError`` for the errors table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# load_image's default limit; tests/images/test_jpeg_probe.py keeps the two equal.
DEFAULT_MAX_PIXELS = 50_000_000

# Chroma subsampling nvJPEG decodes (luma sampling factors; both chroma components 1x1):
# 4:4:4, 4:2:2, 4:4:0, 4:2:0, 4:1:1 and 4:1:0. Its hardware engine takes the first four
# (and greyscale); nvImageCodec hands the others to its CUDA decoder.
_LUMA_SAMPLING = frozenset({(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (4, 2)})

# Start-of-frame markers we refuse, with the reason reported for each.
_REFUSED_FRAMES = {
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "hierarchical",
    0xC6: "hierarchical",
    0xC7: "hierarchical",
    0xC9: "arithmetic",
    0xCA: "arithmetic",
    0xCB: "arithmetic",
    0xCD: "arithmetic",
    0xCE: "arithmetic",
    0xCF: "arithmetic",
    0xCC: "arithmetic",  # DAC: arithmetic-coding conditioning
    0xDE: "hierarchical",  # DHP
    0xDF: "hierarchical",  # EXP
    0xF7: "jpeg_ls",  # SOF55 (JPEG-LS); neither decoder's business
}

_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
# The exact pattern Pillow's Image.getexif() uses for an XMP orientation.
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')
_ORIENTATION_TAG = 0x0112
# Orientations that move pixels; Pillow (ImageOps.exif_transpose) ignores 0, 1 and 9+.
_MOVING_ORIENTATIONS = frozenset(range(2, 9))


@dataclass(frozen=True)
class JpegProbe:
    """What the probe found: ``friendly`` and why not; size as stored (= as oriented)."""

    friendly: bool
    reason: str  # "ok", or why the file goes to Pillow
    width: int = 0
    height: int = 0
    components: int = 0


class _NotFriendly(Exception):
    """Internal: stops the walk with a reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def probe_jpeg(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> JpegProbe:
    """Probe ``data``'s headers; never raises, whatever the bytes."""
    try:
        return _probe(bytes(data), max_pixels)
    except _NotFriendly as refusal:
        return JpegProbe(False, refusal.reason)
    except Exception:  # noqa: BLE001 - a bug or an odd input must route to Pillow, not crash
        return JpegProbe(False, "malformed")


def gpu_friendly_jpeg(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether ``data`` should go to the GPU batch decoder (see the module docstring)."""
    return probe_jpeg(data, max_pixels).friendly


def _u16(data: bytes, offset: int, little: bool = False) -> int:
    if offset < 0 or offset + 2 > len(data):
        raise _NotFriendly("bad_exif")
    return int.from_bytes(data[offset : offset + 2], "little" if little else "big")


def _u32(data: bytes, offset: int, little: bool) -> int:
    if offset < 0 or offset + 4 > len(data):
        raise _NotFriendly("bad_exif")
    return int.from_bytes(data[offset : offset + 4], "little" if little else "big")


def _exif_orientation(tiff: bytes) -> int | None:
    """IFD0's orientation from a TIFF-structured EXIF block; None when it has none.

    Anything malformed raises "bad_exif": Pillow's reading of a broken block (and so
    its rotation, or a CorruptImage error) is not worth predicting.
    """
    if tiff[:4] == b"II*\x00":
        little = True
    elif tiff[:4] == b"MM\x00*":
        little = False
    else:
        raise _NotFriendly("bad_exif")
    ifd = _u32(tiff, 4, little)
    count = _u16(tiff, ifd, little)
    if ifd < 8 or ifd + 2 + 12 * count > len(tiff):
        raise _NotFriendly("bad_exif")
    orientation = None
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if _u16(tiff, entry, little) != _ORIENTATION_TAG:
            continue
        kind, values = _u16(tiff, entry + 2, little), _u32(tiff, entry + 4, little)
        if values != 1:
            raise _NotFriendly("bad_exif")
        if kind == 3:  # SHORT, left-justified in the 4-byte value field
            orientation = _u16(tiff, entry + 8, little)
        elif kind == 4:  # LONG
            orientation = _u32(tiff, entry + 8, little)
        else:
            raise _NotFriendly("bad_exif")
        # No break: Pillow keeps the last of duplicated tags, and so do we.
    return orientation


def _check_frame(payload: bytes, max_pixels: int) -> tuple[int, int, tuple[int, ...]]:
    """A SOF0/SOF1 segment -> (width, height, component ids), or a refusal."""
    if len(payload) < 6:
        raise _NotFriendly("bad_marker")
    precision = payload[0]
    height, width, components = _u16(payload, 1), _u16(payload, 3), payload[5]
    if len(payload) != 6 + 3 * components:
        raise _NotFriendly("bad_marker")
    if precision != 8:
        raise _NotFriendly("precision")  # 12-bit: the 8-bit libjpeg in Pillow refuses it
    if width == 0 or height == 0:
        raise _NotFriendly("no_pixels")  # height 0 = defined later by DNL: rare, odd
    if components == 4:
        raise _NotFriendly("cmyk")
    if components not in (1, 3):
        raise _NotFriendly("components")
    if width * height > max_pixels:
        raise _NotFriendly("too_large")
    ids, sampling = [], []
    for index in range(components):
        factors = payload[7 + 3 * index]
        ids.append(payload[6 + 3 * index])
        sampling.append((factors >> 4, factors & 0x0F))
    if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in sampling):
        raise _NotFriendly("sampling")
    if components == 3 and (sampling[0] not in _LUMA_SAMPLING or sampling[1:] != [(1, 1)] * 2):
        raise _NotFriendly("sampling")
    return width, height, tuple(ids)


def _probe(data: bytes, max_pixels: int) -> JpegProbe:
    size = len(data)
    if size == 0:
        raise _NotFriendly("empty")
    if data[:2] != b"\xff\xd8":
        raise _NotFriendly("not_jpeg")
    frame: tuple[int, int, tuple[int, ...]] | None = None
    exif_blocks: list[bytes] = []
    xmp: bytes | None = None
    adobe_transform: int | None = None
    position = 2
    while True:
        # Each segment: 0xFF (any number of fill 0xFF bytes), a marker byte, a length.
        if position >= size:
            raise _NotFriendly("truncated")
        if data[position] != 0xFF:
            raise _NotFriendly("bad_marker")  # libjpeg skips such bytes with a warning
        while position < size and data[position] == 0xFF:
            position += 1
        if position + 3 > size:
            raise _NotFriendly("truncated")
        marker = data[position]
        length = _u16(data, position + 1)
        start, end = position + 3, position + 1 + length
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD9 or marker == 0xDC:
            raise _NotFriendly("bad_marker")  # stuffing, TEM, RSTn, SOI, EOI, DNL: not here
        if length < 2:
            raise _NotFriendly("bad_marker")
        if end > size:
            raise _NotFriendly("truncated")
        position = end
        if marker in _REFUSED_FRAMES:
            raise _NotFriendly(_REFUSED_FRAMES[marker])
        if marker in (0xC0, 0xC1):
            if frame is not None:
                raise _NotFriendly("bad_marker")  # two frames
            frame = _check_frame(data[start:end], max_pixels)
        elif marker == 0xC8 or 0xF0 <= marker <= 0xFD:
            raise _NotFriendly("unsupported_coding")  # reserved JPG / JPGn extensions
        elif marker == 0xE1:
            payload = data[start:end]
            if payload.startswith(_EXIF_HEADER):
                exif_blocks.append(payload[len(_EXIF_HEADER) :])
            elif payload.startswith(_XMP_HEADER):
                xmp = payload[len(_XMP_HEADER) :]  # Pillow keeps the last XMP segment
        elif marker == 0xE2 and data.startswith(b"MPF\x00", start):
            raise _NotFriendly("mpo")  # Pillow opens MPO without draft(): other geometry
        elif marker == 0xEE and data.startswith(b"Adobe", start) and length >= 14:
            adobe_transform = data[start + 11]
        elif marker == 0xDA:
            break  # start of scan: every header is behind us
    if frame is None:
        raise _NotFriendly("no_frame")
    width, height, ids = frame
    scan_components = data[start] if end > start else 0
    if scan_components != len(ids):
        raise _NotFriendly("multi_scan")  # non-interleaved sequential: rare, untested on GPU
    if data.rfind(b"\xff\xd9", position) < 0:
        # Inside entropy-coded data 0xFF is always followed by 0x00 or RSTn, so no EOI
        # after the scan means a truncated file: Pillow raises, nvJPEG might not. rfind,
        # because the EOI sits at (or near) the end: find() would crawl through megabytes
        # of 0xFF-rich entropy data.
        raise _NotFriendly("truncated")
    if len(ids) == 3 and (adobe_transform == 0 or ids == (82, 71, 66)):
        raise _NotFriendly("rgb_jpeg")
    if len(exif_blocks) > 1:
        raise _NotFriendly("bad_exif")  # Pillow concatenates them; not worth predicting
    orientation = _exif_orientation(exif_blocks[0]) if exif_blocks else None
    if orientation is None and xmp is not None:
        # Pillow's getexif() falls back to XMP's tiff:Orientation; so must we.
        match = _XMP_ORIENTATION.search(xmp)
        orientation = int(match[2]) if match else None
    if orientation in _MOVING_ORIENTATIONS:
        raise _NotFriendly("exif_orientation")
    return JpegProbe(True, "ok", width=width, height=height, components=len(ids))
