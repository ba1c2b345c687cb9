"""A small caption run written the way the pipeline leaves it: in ``captioning.run_layout``'s
folder layout, its Delta tables committed through ``captioning.tables`` as
``pipelines.commit_tables`` commits them (Parquet files written inside the table folder,
then one transaction per table), and a ``summary.json``."""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioning import run_layout, tables
from captioning.data.synthetic_scenes import generate_scenes
from captioning.evaluation.per_image import per_image_rows, write_per_image_csv
from pipelines import metrics as metric_names
from pipelines.launcher import build_summary
from tests.images import awkward_files

RUN_ID = "20260101T000000-abcdef"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
RETENTION_HOURS = 168
# The caption in the data file of a run that was killed before it committed (see small_run).
UNCOMMITTED_CAPTION = "a caption no commit made visible"


def write_data_files(
    table: str, rows: list[dict], schema: pa.Schema, files: int, run_id: str = RUN_ID
) -> list[tables.DataFile]:
    """``rows`` split over ``files`` Parquet files inside ``table``, named as the caption
    job's writer names them; not committed."""
    written = []
    for shard in range(files):
        name = f"{run_layout.DATA_FILE_PREFIX}-{run_id}-{shard:05d}-of-{files:05d}.parquet"
        path = Path(table) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        part = pa.Table.from_pylist(rows[shard::files], schema=schema)
        pq.write_table(part, path)
        written.append(tables.DataFile(name, path.stat().st_size, part.num_rows))
    return written


def write_table(
    table: str, rows: list[dict], schema: pa.Schema, files: int, run_id: str = RUN_ID
) -> list[str]:
    """Replace the table's rows with ``rows`` in ``files`` data files, in one commit
    carrying the run's id as the caption job's does; returns the committed file URIs."""
    start = tables.ensure_table(table, schema, RETENTION_HOURS)
    written = [f for f in write_data_files(table, rows, schema, files, run_id) if f.rows]
    name = Path(table).name
    version = tables.commit(
        table,
        written,
        "replace",
        start,
        f"captioning-caption-{run_id}-{name}",
        schema,
        {"run_id": run_id, "model_id": "sha256-test"},
    )
    assert version is not None, f"run {run_id} had already committed to {table}"
    return tables.committed_files(table)


def caption_row(uri: str, caption: str, score: float, model_id: str = "sha256-test") -> dict:
    return {
        "image_uri": uri,
        "caption": caption,
        "score": score,
        "alternatives": [{"caption": caption + " again", "score": score - 0.5}],
        "width": 128,
        "height": 128,
        "model_id": model_id,
        "captioned_at": NOW,
    }


def error_row(uri: str, stage: str, error_type: str, message: str) -> dict:
    return {
        "image_uri": uri,
        "stage": stage,
        "error_type": error_type,
        "message": message,
        "failed_at": NOW,
    }


def write_run(
    output: str,
    captions: list[dict],
    errors: list[dict],
    shards: int = 2,
    summary: bool = True,
    run_id: str = RUN_ID,
) -> str:
    """Commit a run's tables (and write its summary) under ``output``, the pipeline's
    --output DIR; returns DIR. Like a full rerun, it replaces what an earlier one committed."""
    write_table(
        run_layout.captions_table(output), captions, run_layout.CAPTIONS_SCHEMA, shards, run_id
    )
    write_table(run_layout.errors_table(output), errors, run_layout.ERRORS_SCHEMA, 1, run_id)
    if summary:
        totals = {metric_names.IMAGES_CAPTIONED: len(captions)}
        for row in errors:
            key = f"{metric_names.ERRORS_PREFIX}{row['stage']}.{row['error_type']}"
            totals[key] = totals.get(key, 0) + 1
        document = build_summary(totals, 4.0, "sha256-test", run_id, output)
        # What pipelines.caption_pipeline adds once the tables are committed.
        document |= {
            "max_error_rate": 0.5,
            "captions_committed": True,
            "table_versions": {
                "captions": tables.version(run_layout.captions_table(output)),
                "errors": tables.version(run_layout.errors_table(output)),
            },
            "alert": None,
        }
        Path(run_layout.summary_path(output)).write_text(json.dumps(document))
    return output


def write_evaluation_csv(path: Path, small_run: str) -> Path:
    """Written by evaluate's own writer, so the two commands agree on the format."""
    images = sorted(Path(small_run).parent.parent.glob("scenes/images/*.png"))[:6]
    references = {
        image.name: [f"reference {i} a", f"reference {i} b"] for i, image in enumerate(images)
    }
    references["lost.png"] = ["a", "b"]
    hypotheses = {name: f"generated {name}" for name in references}
    cider = {image.name: 3.0 - i * 0.5 for i, image in enumerate(images)} | {"lost.png": 9.0}
    write_per_image_csv(per_image_rows(references, hypotheses, cider), path)
    return path


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> str:
    """12 scenes and 3 awkward images captioned, one image gone since, one unreadable;
    3 error rows. Returns the run's --output DIR (ROOT/out/run; the images are under ROOT)."""
    root = tmp_path_factory.mktemp("report_run")
    generate_scenes(root / "scenes", count=12, seed=5)
    images = sorted((root / "scenes" / "images").glob("*.png"))
    with open(root / "scenes" / "captions.csv", newline="") as handle:
        by_name = {row["image"]: row["caption"] for row in csv.DictReader(handle)}
    rows = [
        caption_row(str(path), by_name[path.name], -0.05 * (index + 1))
        for index, path in enumerate(images)
    ]
    for name, maker in (
        ("rotated.jpg", awkward_files.exif_rotated_jpeg),
        ("thin.png", awkward_files.thin_png),
        ("cmyk.jpg", awkward_files.cmyk_jpeg),
    ):
        (root / name).write_bytes(maker())
        rows.append(caption_row(str(root / name), f"an awkward {name.split('.')[0]} file", -0.9))
    # Captioned once, unreadable now: the report must say so instead of showing a broken image.
    (root / "overwritten.png").write_bytes(b"not an image any more")
    rows.append(caption_row(str(root / "overwritten.png"), "a small red square", -1.2))
    rows.append(caption_row(str(root / "deleted.png"), "a large blue circle", -0.01))
    errors = [
        error_row(
            str(root / "broken.png"), "decode", "UnidentifiedImage", "not a recognised image"
        ),
        error_row(str(root / "empty.jpg"), "decode", "EmptyFile", "file is empty (0 bytes)"),
        error_row(str(root / "gone.jpg"), "read", "FileNotFoundError", "no such file"),
    ]
    output = write_run(str(root / "out" / "run"), rows, errors)
    # A later run killed before its commit left a data file in the captions folder: no
    # reader may show it.
    write_data_files(
        run_layout.captions_table(output),
        [caption_row(str(root / "killed.png"), UNCOMMITTED_CAPTION, -0.001)],
        run_layout.CAPTIONS_SCHEMA,
        1,
        run_id="20260102T000000-killed",
    )
    return output
