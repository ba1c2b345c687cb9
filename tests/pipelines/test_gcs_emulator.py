"""gs:// for real: the google-cloud-storage client, through Beam's GCS filesystem, against a
local GCS emulator (gcp-storage-emulator) on loopback: the `gcs` fixture in tests/conftest.py."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import GCS_BUCKET as BUCKET


def _upload_dir(bucket, local: Path, prefix: str) -> None:
    for path in sorted(local.iterdir()):
        if path.is_file():
            bucket.blob(f"{prefix}/{path.name}").upload_from_filename(str(path))


def test_reads_images_from_gs_and_writes_parquet_to_gs(gcs, archive, tiny_bundle):
    from pipelines.caption_pipeline import run

    _upload_dir(gcs, archive / "scenes" / "images", "photos")
    _upload_dir(gcs, Path(tiny_bundle), "models/tiny")
    gcs.blob("photos/broken.jpg").upload_from_string(b"<html>not an image</html>")

    summary = run(
        [
            "--input",
            f"gs://{BUCKET}/photos/*",
            "--output",
            f"gs://{BUCKET}/out/captions",
            "--model",
            f"gs://{BUCKET}/models/tiny",
            "--project",
            "test-project",
        ]
    )

    names = [blob.name for blob in gcs.client.list_blobs(BUCKET, prefix="out/")]
    caption_files = [n for n in names if n.startswith("out/captions-") and n.endswith(".parquet")]
    error_files = [n for n in names if n.startswith("out/captions_errors-")]
    assert caption_files and error_files and "out/captions_summary.json" in names

    def read(name):
        return pq.read_table(io.BytesIO(gcs.blob(name).download_as_bytes()))

    captions = [row for name in caption_files for row in read(name).to_pylist()]
    errors = [row for name in error_files for row in read(name).to_pylist()]
    assert len(captions) == 200 == summary["captioned"]
    assert all(row["image_uri"].startswith(f"gs://{BUCKET}/photos/scene_") for row in captions)
    assert [(e["image_uri"], e["error_type"]) for e in errors] == [
        (f"gs://{BUCKET}/photos/broken.jpg", "UnidentifiedImage")
    ]
