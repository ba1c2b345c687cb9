"""A small caption run written the way the pipeline writes it: Parquet shards and a summary."""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioning.data.synthetic_scenes import generate_scenes
from captioning.evaluation.per_image import per_image_rows, write_per_image_csv
from pipelines import metrics as metric_names
from pipelines.run_summary import build_summary, summary_path
from pipelines.schemas import CAPTIONS_SCHEMA, ERRORS_SCHEMA
from pipelines.write_outputs import captions_prefix, errors_prefix
from tests.images import awkward_files

RUN_ID = "20260101T000000-abcdef"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def write_shards(prefix: str, rows: list[dict], schema: pa.Schema, shards: int) -> list[Path]:
    """``rows`` split over ``shards`` files named as Beam's WriteToParquet names them."""
    paths = []
    for shard in range(shards):
        path = Path(f"{prefix}-{RUN_ID}-{shard:05d}-of-{shards:05d}.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows[shard::shards], schema=schema), path)
        paths.append(path)
    return paths


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
    output: str, captions: list[dict], errors: list[dict], shards: int = 2, summary: bool = True
) -> str:
    """Write the run's tables (and summary) under ``output``, the pipeline's --output."""
    if captions:
        write_shards(captions_prefix(output), captions, CAPTIONS_SCHEMA, shards)
    if errors:
        write_shards(errors_prefix(output), errors, ERRORS_SCHEMA, 1)
    if summary:
        totals = {metric_names.IMAGES_CAPTIONED: len(captions)}
        for row in errors:
            key = f"{metric_names.ERRORS_PREFIX}{row['stage']}.{row['error_type']}"
            totals[key] = totals.get(key, 0) + 1
        document = build_summary(totals, 4.0, "sha256-test", RUN_ID, output)
        Path(summary_path(output)).write_text(json.dumps(document))
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
    3 error rows. Returns the run's PREFIX."""
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
    return write_run(str(root / "out" / "run"), rows, errors)
