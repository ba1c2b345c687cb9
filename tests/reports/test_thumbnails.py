"""Thumbnails: small oriented JPEGs, or the reason an image cannot be shown."""

from __future__ import annotations

import io

from PIL import Image

from captioning.reports.thumbnails import make_thumbnail, make_thumbnails
from tests.images import awkward_files


def test_thumbnail_is_a_small_jpeg_in_display_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(awkward_files.exif_rotated_jpeg())  # stored 96x64, shown 64x96
    thumbnail = make_thumbnail(str(path), size=48)
    assert thumbnail.problem is None
    image = Image.open(io.BytesIO(thumbnail.jpeg))
    assert image.format == "JPEG" and image.size == (32, 48) == (thumbnail.width, thumbnail.height)
    assert thumbnail.data_uri().startswith("data:image/jpeg;base64,/9j/")


def test_unreadable_images_carry_the_reason(tmp_path):
    (tmp_path / "html.jpg").write_bytes(awkward_files.html_as_jpg())
    (tmp_path / "truncated.jpg").write_bytes(awkward_files.truncated_jpeg())
    uris = [str(tmp_path / name) for name in ("html.jpg", "truncated.jpg", "missing.png")]
    thumbnails = make_thumbnails(uris + uris[:1])
    assert list(thumbnails) == uris, "one thumbnail per distinct URI, in order"
    assert all(t.jpeg is None for t in thumbnails.values())
    assert thumbnails[uris[0]].problem.startswith("UnidentifiedImage: not a recognised image")
    assert thumbnails[uris[1]].problem.startswith("CorruptImage:")
    assert thumbnails[uris[2]].problem.startswith("cannot read file:")
