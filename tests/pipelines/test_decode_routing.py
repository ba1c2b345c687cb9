"""GPU decoding's routing, run on CPU: the same tables whichever way an image goes.

With ``--decode-device gpu`` the job sends the JPEGs the GPU takes to the inference step
as bytes, where nvImageCodec decodes a batch at once and Keras resizes it, and
everything else through the Pillow pool. With no GPU here, nvImageCodec runs on its CPU
backend (libjpeg-turbo, like Pillow): the routed graph, the JPEG examples, the batch
decode, the DLPack hand-over and the resize all run for real, and the tables must
match those of ``--decode-device cpu``. How far the GPU's own decoder is from Pillow is
measured on a GPU (``benchmarks/gpu_decode.py``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import run_layout, tables
from captioning.images.decode import load_image
from captioning.images.reencode import load_image_as_jpeg
from pipelines import caption_pipeline
from pipelines.caption_model_handler import NVIMGCODEC_BACKENDS
from tests.images import awkward_files


@pytest.fixture(scope="module")
def mixed_archive(tmp_path_factory, scenes) -> Path:
    """Baseline JPEGs the GPU would take, and every kind it must hand to Pillow."""
    folder = tmp_path_factory.mktemp("mixed")
    for index, path in enumerate(sorted((scenes / "images").glob("*.png"))[:16]):
        image = Image.open(path).convert("RGB")
        image.save(folder / f"scene_{index:02d}.jpg", "JPEG", quality=90)
    image.save(folder / "progressive.jpg", "JPEG", quality=90, progressive=True)
    files = {
        "cmyk.jpg": awkward_files.cmyk_jpeg(),
        "rotated.jpg": awkward_files.exif_rotated_jpeg(),
        "photo.png": awkward_files.png(),
        "animated.gif": awkward_files.animated_gif(),
        "truncated.jpg": awkward_files.truncated_jpeg(),
        "page.jpg": awkward_files.html_as_jpg(),
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _run(folder: Path, output: Path, bundle: str, routed: int) -> tuple[dict, dict]:
    argv = ["--input", str(folder / "*"), "--output", str(output), "--model", bundle]
    summary = caption_pipeline.run([*argv, "--precision", "float32", "--max-error-rate", "1"])
    assert summary["inputs"] == len(list(folder.iterdir()))
    assert summary["jpegs_routed_to_gpu"] == routed
    assert summary["jpegs_decoded_by_nvimgcodec"] == routed
    captions = tables.read(run_layout.captions_table(str(output))).to_pylist()
    errors = tables.read(run_layout.errors_table(str(output))).to_pylist()
    by_uri = {row["image_uri"]: (row["caption"], row["width"], row["height"]) for row in captions}
    failed = {row["image_uri"]: (row["stage"], row["error_type"]) for row in errors}
    return by_uri, failed


def test_routed_jpegs_give_the_same_tables_as_the_cpu_path(
    mixed_archive, tiny_bundle, tmp_path, monkeypatch
):
    on_cpu = _run(mixed_archive, tmp_path / "cpu", tiny_bundle, routed=0)
    monkeypatch.setattr(caption_pipeline, "_decode_device", lambda *_: "gpu")
    monkeypatch.setenv(NVIMGCODEC_BACKENDS, "cpu")
    # The 16 baseline JPEGs; the probe sends the truncated one (no end marker) to Pillow.
    routed = _run(mixed_archive, tmp_path / "routed", tiny_bundle, routed=16)
    captions, errors = routed
    assert errors == on_cpu[1]
    assert captions.keys() == on_cpu[0].keys()
    # Same sizes; captions as far as the resize's rounding lets them be (see below).
    assert {uri: size for uri, (_, *size) in captions.items()} == {
        uri: size for uri, (_, *size) in on_cpu[0].items()
    }
    # The resize differs from Pillow's by rounding (mean 0.15-0.45 of 255): 21 of 21
    # captions were identical when this was written; a caption or two may flip.
    same = sum(captions[uri][0] == on_cpu[0][uri][0] for uri in captions)
    assert same >= len(captions) - 2, f"only {same} of {len(captions)} captions agree"
    assert len(captions) == 16 + 5  # scenes, progressive, cmyk, rotated, png, gif
    assert {Path(uri).name: kind for uri, kind in errors.items()} == {
        "truncated.jpg": ("decode", "CorruptImage"),
        "page.jpg": ("decode", "UnidentifiedImage"),
        "empty.jpg": ("decode", "EmptyFile"),
    }


def test_right_fit_sends_a_small_jpeg_that_decodes_to_nearly_the_same_pixels(mixed_archive):
    data = (mixed_archive / "rotated.jpg").read_bytes()
    direct = load_image(data, 299, 50_000_000)
    encoded = load_image_as_jpeg(data, 299, 50_000_000)
    # Compact: a fraction of the raw 299x299x3 pixels it stands for.
    assert len(encoded.jpeg) < direct.pixels.nbytes / 4
    assert (encoded.width, encoded.height) == (direct.width, direct.height)
    again = np.asarray(Image.open(io.BytesIO(encoded.jpeg)).convert("RGB"), np.int16)
    assert np.abs(again - direct.pixels.astype(np.int16)).mean() < 2.0
