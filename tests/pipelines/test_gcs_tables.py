"""The captions and errors tables on gs://: the caption job commits through delta-rs'
own GCS client (its object_store crate, XML API) to the GCS emulator, and Beam writes the
data files there through google-cloud-storage (JSON API). gcp-storage-emulator has no XML
API, so ``tests.gcs_xml_api`` puts one in front of it; both run in processes of their
own (the ``gcs_process`` fixture: delta-rs holds the GIL while it waits for an answer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioning import run_layout, tables
from captioning.errors import CommitConflictError
from tests.conftest import GCS_BUCKET as BUCKET


def _upload(bucket, local: Path, prefix: str) -> None:
    for path in sorted(local.iterdir()):
        bucket.blob(f"{prefix}/{path.name}").upload_from_filename(str(path))


def test_the_caption_job_commits_its_tables_on_gs(gcs_process, scenes, tiny_bundle):
    from pipelines.caption_pipeline import run

    images = sorted((scenes / "images").glob("*.png"))[:8]
    for image in images[:6]:
        gcs_process.blob(f"photos/{image.name}").upload_from_filename(str(image))
    gcs_process.blob("photos/broken.png").upload_from_string(b"<html>not an image</html>")
    _upload(gcs_process, Path(tiny_bundle), "models/tiny")
    output = f"gs://{BUCKET}/out/run"
    args = ["--input", f"gs://{BUCKET}/photos/*", "--output", output]
    args += ["--model", f"gs://{BUCKET}/models/tiny", "--project", "test-project"]

    first = run(args)
    assert (first["captioned"], first["errors"]) == (6, 1)
    # Two new photos; the incremental run appends only them.
    for image in images[6:]:
        gcs_process.blob(f"photos/{image.name}").upload_from_filename(str(image))
    second = run([*args, "--skip-existing"])
    assert (second["captioned"], second["skipped_existing"]) == (2, 6)

    captions = tables.read(run_layout.captions_table(output), columns=["image_uri"])
    uris = captions.column("image_uri").to_pylist()
    assert sorted(uris) == sorted(f"gs://{BUCKET}/photos/{i.name}" for i in images)
    errors = tables.read(run_layout.errors_table(output), columns=["image_uri"])
    assert errors.column("image_uri").to_pylist() == [f"gs://{BUCKET}/photos/broken.png"]
    assert tables.version(run_layout.captions_table(output)) == 2
    # Time travel: the first run's version still reads as it was.
    assert tables.read(run_layout.captions_table(output), at_version=1).num_rows == 6
    names = {blob.name for blob in gcs_process.client.list_blobs(BUCKET, prefix="out/run/")}
    assert "out/run/summary.json" in names
    assert not [n for n in names if "beam-temp-" in n]


def test_two_replacing_commits_on_gs_one_conflicts(gcs_process, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = f"gs://{BUCKET}/conflict/errors"
    start = tables.ensure_table(table, run_layout.ERRORS_SCHEMA, 168)
    files = []
    for name in ("a", "b"):
        rows = pa.table(
            {
                "image_uri": [name],
                "stage": ["read"],
                "error_type": ["E"],
                "message": ["m"],
                "failed_at": pa.array([0], pa.timestamp("us", tz="UTC")),
            },
            schema=run_layout.ERRORS_SCHEMA,
        )
        local = tmp_path / f"{name}.parquet"
        pq.write_table(rows, local)
        gcs_process.blob(f"conflict/errors/{name}.parquet").upload_from_filename(str(local))
        files.append(tables.DataFile(f"{name}.parquet", local.stat().st_size, 1))
    schema = run_layout.ERRORS_SCHEMA
    tables.commit(table, files[:1], "replace", start, "run-a", schema)
    with pytest.raises(CommitConflictError, match="another run committed"):
        tables.commit(table, files[1:], "replace", start, "run-b", schema)
    assert tables.read(table).column("image_uri").to_pylist() == ["a"]
