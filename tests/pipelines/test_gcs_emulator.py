"""gs:// for real: the google-cloud-storage client, through Beam's GCS filesystem, against a
local GCS emulator (gcp-storage-emulator) on loopback: the `gcs` fixture in tests/conftest.py.

Images and the model bundle are read from gs://; the output folder is local. The output's
Delta tables are written and committed by delta-rs, whose object store speaks the GCS XML
API, which gcp-storage-emulator does not implement, so tables cannot live on this emulator
(with real GCS, a gs:// --output goes through the same ``captioning.tables`` calls).
"""

from __future__ import annotations

import json
from pathlib import Path

from captioning import run_layout, tables
from tests.conftest import GCS_BUCKET as BUCKET


def _upload_dir(bucket, local: Path, prefix: str) -> None:
    for path in sorted(local.iterdir()):
        if path.is_file():
            bucket.blob(f"{prefix}/{path.name}").upload_from_filename(str(path))


def test_reads_images_and_model_from_gs(gcs, archive, tiny_bundle, tmp_path):
    from pipelines.caption_pipeline import run

    _upload_dir(gcs, archive / "scenes" / "images", "photos")
    _upload_dir(gcs, Path(tiny_bundle), "models/tiny")
    gcs.blob("photos/broken.jpg").upload_from_string(b"<html>not an image</html>")
    output = tmp_path / "out"

    summary = run(
        [
            "--input",
            f"gs://{BUCKET}/photos/*",
            "--output",
            str(output),
            "--model",
            f"gs://{BUCKET}/models/tiny",
            "--project",
            "test-project",
        ]
    )

    captions = tables.read(run_layout.captions_table(str(output))).to_pylist()
    errors = tables.read(run_layout.errors_table(str(output))).to_pylist()
    assert len(captions) == 200 == summary["captioned"]
    assert all(row["image_uri"].startswith(f"gs://{BUCKET}/photos/scene_") for row in captions)
    assert [(e["image_uri"], e["error_type"]) for e in errors] == [
        (f"gs://{BUCKET}/photos/broken.jpg", "UnidentifiedImage")
    ]
    written = json.loads(Path(run_layout.summary_path(str(output))).read_text())
    assert written["run_id"] == summary["run_id"] and written["captions_committed"] is True
    # Nothing was written to the bucket: it holds only what the test put there.
    names = {blob.name for blob in gcs.client.list_blobs(BUCKET)}
    assert all(name.startswith(("photos/", "models/tiny/")) for name in names), names
