"""gs:// for real: the google-cloud-storage client, through Beam's GCS filesystem, against a
local GCS emulator (gcp-storage-emulator) on loopback, started and stopped here."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest

BUCKET = "captioning-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    patch = pytest.MonkeyPatch()
    patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    patch.setenv("NO_GCE_CHECK", "true")  # no metadata-server probe for credentials
    patch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    from google.cloud import storage

    client = storage.Client.create_anonymous_client()
    yield client.bucket(BUCKET)
    patch.undo()
    server.stop()


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
