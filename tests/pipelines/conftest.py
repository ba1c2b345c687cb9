"""An archive of ~200 synthetic scenes plus every kind of awkward and broken file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from captioning import tables
from captioning.data.synthetic_scenes import generate_scenes
from tests.images import awkward_files

# File name -> how it must end: "caption" or the error_type of its error row.
AWKWARD = {
    "cmyk.jpg": ("cmyk", "caption"),
    "png16.png": ("png16", "caption"),
    "palette_alpha.png": ("palette_alpha", "caption"),
    "animated.gif": ("animated_gif", "caption"),
    "exif_rotated.jpg": ("exif_rotated", "caption"),
    "thin_1x4000.png": ("thin", "caption"),
    "grayscale.png": ("grayscale", "caption"),
    "photo.webp": ("webp", "caption"),
    "photo.bmp": ("bmp", "caption"),
    "scan.tiff": ("tiff", "caption"),
}
BROKEN = {
    "empty.jpg": "empty",
    "truncated.jpg": "truncated_jpeg",
    "html_saved_as.jpg": "html_as_jpg",
    "bad_crc.png": "png_bad_crc",
    "bomb_60000x60000.png": "png_huge_header",
    "icon.ico": "ico",
}


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    generate_scenes(root / "scenes", count=200, seed=11)
    awkward = root / "awkward"
    awkward.mkdir()
    for name, (maker, _) in AWKWARD.items():
        (awkward / name).write_bytes(awkward_files.VALID[maker]())
    for name, key in BROKEN.items():
        (awkward / name).write_bytes(awkward_files.BROKEN[key][0]())
    return root


def expected_error_types() -> dict[str, str]:
    return {name: awkward_files.BROKEN[key][1] for name, key in BROKEN.items()}


def read_table(table: str):
    """A table's committed snapshot, read through ``captioning.tables``, and its data
    files. Never a glob of the folder: files of runs that did not commit lie there too."""
    assert tables.exists(table), f"no Delta table at {table}"
    return tables.read(table), [Path(uri) for uri in tables.committed_files(table)]


def copy_archive(archive: Path, destination: Path) -> Path:
    shutil.copytree(archive, destination)
    return destination
