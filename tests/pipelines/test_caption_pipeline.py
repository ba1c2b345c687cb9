"""The caption job end to end on DirectRunner: every input URI ends in exactly one table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from captioning.data.synthetic_scenes import generate_scenes
from pipelines.caption_pipeline import run
from pipelines.schemas import CAPTIONS_SCHEMA, ERRORS_SCHEMA
from tests.pipelines.conftest import AWKWARD, copy_archive, expected_error_types, read_table


def _caption(archive: Path, output: Path, model: str, *extra: str) -> dict:
    manifest = archive / "manifest.txt"
    if not manifest.exists():
        # The manifest repeats one scene (it must be captioned once) and names a missing file.
        scene = sorted((archive / "scenes" / "images").iterdir())[0]
        manifest.write_text(f"{scene}\n\n{archive / 'awkward' / 'missing.jpg'}\n")
    argv = [
        "--input",
        str(archive / "scenes" / "images" / "*.png"),
        "--input",
        str(archive / "awkward" / "*"),
        "--input-manifest",
        str(manifest),
        "--output",
        str(output / "captions"),
        "--model",
        model,
        "--decode-timeout",
        "60",
        *extra,
    ]
    return run(argv)


def _expected_uris(archive: Path) -> set[str]:
    files = {str(p) for p in (archive / "scenes" / "images").iterdir()}
    files |= {str(p) for p in (archive / "awkward").iterdir()}
    return files | {str(archive / "awkward" / "missing.jpg")}


def test_every_uri_ends_in_exactly_one_table(archive, tiny_bundle, tmp_path):
    summary = _caption(archive, tmp_path, tiny_bundle)
    captions, caption_files = read_table(str(tmp_path / "captions"))
    errors, _ = read_table(str(tmp_path / "captions_errors"))

    captioned = captions.column("image_uri").to_pylist()
    failed = errors.column("image_uri").to_pylist()
    everything = Counter(captioned + failed)
    assert set(everything) == _expected_uris(archive)
    assert max(everything.values()) == 1  # each exactly once

    # Awkward but valid images are captioned...
    for name in AWKWARD:
        assert str(archive / "awkward" / name) in captioned, name
    # ...broken ones are error rows that name their cause.
    by_uri = {row["image_uri"]: row for row in errors.to_pylist()}
    for name, error_type in expected_error_types().items():
        row = by_uri[str(archive / "awkward" / name)]
        assert row["stage"] == "decode" and row["error_type"] == error_type, row
        assert row["message"]
    missing = by_uri[str(archive / "awkward" / "missing.jpg")]
    assert missing["stage"] == "read"

    # Rows carry what DESIGN.md promises.
    rows = {row["image_uri"]: row for row in captions.to_pylist()}
    rotated = rows[str(archive / "awkward" / "exif_rotated.jpg")]
    assert (rotated["width"], rotated["height"]) == (64, 96)
    thin = rows[str(archive / "awkward" / "thin_1x4000.png")]
    assert (thin["width"], thin["height"]) == (1, 4000)
    assert all(row["score"] <= 0 for row in rows.values())
    assert all(len(row["alternatives"]) == 1 for row in rows.values())  # beam width 2
    assert {row["model_id"] for row in rows.values()} == {summary["model_id"]}

    # The summary agrees with the tables.
    assert summary["captioned"] == len(captioned) and summary["errors"] == len(failed)
    assert summary["inputs"] == len(everything)
    assert summary["errors_by_stage"]["decode"]["CorruptImage"] == 2
    written = json.loads((tmp_path / "captions_summary.json").read_text())
    assert written["captioned"] == summary["captioned"] and written["images_per_second"] > 0
    assert all(f.name.startswith(f"captions-{summary['run_id']}-") for f in caption_files)


def test_tables_have_the_exact_schema_in_pyarrow_and_duckdb(archive, tiny_bundle, tmp_path):
    _caption(archive, tmp_path, tiny_bundle)
    _, caption_files = read_table(str(tmp_path / "captions"))
    _, error_files = read_table(str(tmp_path / "captions_errors"))
    for path in caption_files:
        assert pq.read_schema(path).remove_metadata() == CAPTIONS_SCHEMA
    for path in error_files:
        assert pq.read_schema(path).remove_metadata() == ERRORS_SCHEMA
    connection = duckdb.connect()
    glob = str(tmp_path / "captions-*.parquet")
    described = {
        row[0]: row[1] for row in connection.execute(f"DESCRIBE SELECT * FROM '{glob}'").fetchall()
    }
    assert described["captioned_at"] == "TIMESTAMP WITH TIME ZONE"
    assert described["alternatives"] == "STRUCT(caption VARCHAR, score FLOAT)[]"
    assert described["width"] == "INTEGER" and described["score"] == "FLOAT"
    count, distinct = connection.execute(
        f"SELECT count(*), count(DISTINCT image_uri) FROM '{glob}'"
    ).fetchone()
    assert count == distinct > 200
    stages = dict(
        connection.execute(
            f"SELECT stage, count(*) FROM '{tmp_path / 'captions_errors-*.parquet'}' GROUP BY stage"
        ).fetchall()
    )
    assert stages == {"read": 1, "decode": len(expected_error_types())}


def test_incremental_reruns_caption_only_new_images(archive, tiny_bundle, tmp_path):
    grown = copy_archive(archive, tmp_path / "archive")
    (grown / "manifest.txt").unlink(missing_ok=True)
    first = _caption(grown, tmp_path, tiny_bundle, "--skip-existing")
    before, _ = read_table(str(tmp_path / "captions"))

    again = _caption(grown, tmp_path, tiny_bundle, "--skip-existing")
    after, _ = read_table(str(tmp_path / "captions"))
    assert again["captioned"] == 0
    assert again["skipped_existing"] == first["captioned"]
    assert after.num_rows == before.num_rows
    # The errors were retried and replaced, not appended: still one row per broken input.
    errors, error_files = read_table(str(tmp_path / "captions_errors"))
    assert errors.num_rows == first["errors"]
    assert all(again["run_id"] in f.name for f in error_files)

    generate_scenes(grown / "more", count=20, seed=99)
    for image in (grown / "more" / "images").iterdir():
        image.rename(grown / "scenes" / "images" / image.name)
    third = _caption(grown, tmp_path, tiny_bundle, "--skip-existing")
    final, _ = read_table(str(tmp_path / "captions"))
    assert third["captioned"] == 20
    assert final.num_rows == before.num_rows + 20
    assert len(set(final.column("image_uri").to_pylist())) == final.num_rows


def test_full_rerun_replaces_earlier_shards(archive, tiny_bundle, tmp_path):
    first = _caption(archive, tmp_path, tiny_bundle)
    second = _caption(archive, tmp_path, tiny_bundle)
    captions, files = read_table(str(tmp_path / "captions"))
    assert captions.num_rows == first["captioned"] == second["captioned"]
    assert all(second["run_id"] in f.name for f in files)


def test_two_worker_processes_give_the_same_rows(archive, tiny_bundle, tmp_path):
    _caption(archive, tmp_path / "one", tiny_bundle)
    _caption(
        archive,
        tmp_path / "two",
        tiny_bundle,
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
    )

    def rows(output):
        table, _ = read_table(str(output / "captions"))
        return sorted(
            (r["image_uri"], r["caption"], r["width"], r["height"]) for r in table.to_pylist()
        )

    def errors(output):
        table, _ = read_table(str(output / "captions_errors"))
        return sorted((r["image_uri"], r["stage"], r["error_type"]) for r in table.to_pylist())

    assert rows(tmp_path / "one") == rows(tmp_path / "two")
    assert errors(tmp_path / "one") == errors(tmp_path / "two")


def test_a_glob_that_matches_nothing_is_an_error_row(tiny_bundle, tmp_path):
    summary = run(
        [
            "--input",
            str(tmp_path / "nothing" / "*.jpg"),
            "--output",
            str(tmp_path / "out" / "captions"),
            "--model",
            tiny_bundle,
        ]
    )
    errors, _ = read_table(str(tmp_path / "out" / "captions_errors"))
    assert errors.to_pylist()[0]["error_type"] == "NoMatch"
    assert summary["captioned"] == 0 and summary["errors"] == 1
