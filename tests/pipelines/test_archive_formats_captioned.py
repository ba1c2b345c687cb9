"""The caption job captions TIFF, 16-bit and CMYK TIFF, HEIC and AVIF end to end.

The decode step runs in the job's pool of decoder processes, where pillow-heif's opener
has to be registered anew; the rows must carry each file's original, upright size.
"""

from __future__ import annotations

from pathlib import Path

from captioning import run_layout
from pipelines.caption_pipeline import run
from tests.images.awkward_files import _save, scene_like
from tests.images.test_archive_formats import tiff_16bit_grey, tiff_cmyk, tiff_lzw
from tests.pipelines.conftest import read_table


def _rotated_heic() -> bytes:
    """Stored 96x64, turned to 64x96 by the container (as an iPhone writes it)."""
    exif = scene_like().getexif()
    exif[0x0112] = 6
    return _save(scene_like(), "HEIF", quality=95, exif=exif.tobytes())


# file name -> (bytes, the width and height its caption row must carry)
FILES = {
    "scan.tif": (tiff_lzw, (96, 64)),
    "scan16.tiff": (tiff_16bit_grey, (96, 64)),
    "print_cmyk.tif": (tiff_cmyk, (96, 64)),
    "iphone.heic": (_rotated_heic, (64, 96)),
    "photo.avif": (lambda: _save(scene_like(), "AVIF", quality=95), (96, 64)),
}


def test_archive_formats_are_captioned_with_their_original_size(tiny_bundle, tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    for name, (make, _) in FILES.items():
        (folder / name).write_bytes(make())
    output = tmp_path / "out"
    summary = run(
        [
            "--input",
            str(folder / "*"),
            "--output",
            str(output),
            "--model",
            tiny_bundle,
            "--decode-timeout",
            "60",
        ]
    )
    captions, _ = read_table(run_layout.captions_table(str(output)))
    rows = {Path(row["image_uri"]).name: row for row in captions.to_pylist()}
    assert set(rows) == set(FILES), summary
    for name, (_, size) in FILES.items():
        assert rows[name]["caption"].strip(), name
        assert (rows[name]["width"], rows[name]["height"]) == size, name
    assert summary["captioned"] == len(FILES) and summary["errors"] == 0
