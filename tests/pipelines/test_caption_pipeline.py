"""The caption job end to end on DirectRunner: every input URI ends in exactly one table.

The tables are read as readers read them: the committed snapshot, through
``captioning.tables``."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from captioning import run_layout, tables
from captioning.cli.main import main
from captioning.data.synthetic_scenes import generate_scenes
from captioning.errors import EXIT_USAGE, UserError
from pipelines.caption_pipeline import run
from tests.pipelines.conftest import AWKWARD, copy_archive, expected_error_types, read_table


def _caption(archive: Path, output: Path, model: str, *extra: str) -> dict:
    """Caption the archive into the --output folder ``output``."""
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
        str(output),
        "--model",
        model,
        "--decode-timeout",
        "60",
        *extra,
    ]
    return run(argv)


def _captions(output: Path):
    return read_table(run_layout.captions_table(str(output)))


def _errors(output: Path):
    return read_table(run_layout.errors_table(str(output)))


def _expected_uris(archive: Path) -> set[str]:
    files = {str(p) for p in (archive / "scenes" / "images").iterdir()}
    files |= {str(p) for p in (archive / "awkward").iterdir()}
    return files | {str(archive / "awkward" / "missing.jpg")}


def test_every_uri_ends_in_exactly_one_table(archive, tiny_bundle, tmp_path):
    output = tmp_path / "out"
    summary = _caption(archive, output, tiny_bundle)
    captions, caption_files = _captions(output)
    errors, _ = _errors(output)

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
    written = json.loads(Path(run_layout.summary_path(str(output))).read_text())
    assert written["captioned"] == summary["captioned"] and written["images_per_second"] > 0
    assert written["error_rate"] == pytest.approx(len(failed) / len(everything), abs=1e-6)
    assert written["captions_committed"] is True and written["alert"] is None
    assert written["max_error_rate"] == 0.05 and written["commit_seconds"] >= 0
    assert written["table_versions"] == {
        "captions": tables.version(run_layout.captions_table(str(output))),
        "errors": tables.version(run_layout.errors_table(str(output))),
    }
    prefix = f"{run_layout.DATA_FILE_PREFIX}-{summary['run_id']}-"
    assert all(f.name.startswith(prefix) for f in caption_files)


def test_tables_have_the_exact_schema_in_pyarrow_and_duckdb(archive, tiny_bundle, tmp_path):
    output = tmp_path / "out"
    _caption(archive, output, tiny_bundle)
    _, caption_files = _captions(output)
    _, error_files = _errors(output)
    for path in caption_files:
        assert pq.read_schema(path).remove_metadata() == run_layout.CAPTIONS_SCHEMA
    for path in error_files:
        assert pq.read_schema(path).remove_metadata() == run_layout.ERRORS_SCHEMA
    connection = duckdb.connect()
    # DuckDB reads the committed snapshot as a pyarrow dataset, not the folder's files.
    connection.register("captions_snapshot", tables.dataset(run_layout.captions_table(str(output))))
    connection.register("errors_snapshot", tables.dataset(run_layout.errors_table(str(output))))
    described = {
        row[0]: row[1]
        for row in connection.execute("DESCRIBE SELECT * FROM captions_snapshot").fetchall()
    }
    assert described["captioned_at"] == "TIMESTAMP WITH TIME ZONE"
    assert described["alternatives"] == "STRUCT(caption VARCHAR, score FLOAT)[]"
    assert described["width"] == "INTEGER" and described["score"] == "FLOAT"
    count, distinct = connection.execute(
        "SELECT count(*), count(DISTINCT image_uri) FROM captions_snapshot"
    ).fetchone()
    assert count == distinct > 200
    stages = dict(
        connection.execute("SELECT stage, count(*) FROM errors_snapshot GROUP BY stage").fetchall()
    )
    assert stages == {"read": 1, "decode": len(expected_error_types())}


def test_incremental_reruns_caption_only_new_images(archive, tiny_bundle, tmp_path):
    grown = copy_archive(archive, tmp_path / "archive")
    (grown / "manifest.txt").unlink(missing_ok=True)
    output = tmp_path / "out"
    first = _caption(grown, output, tiny_bundle, "--skip-existing")
    before, _ = _captions(output)

    again = _caption(grown, output, tiny_bundle, "--skip-existing")
    after, _ = _captions(output)
    assert again["captioned"] == 0
    assert again["skipped_existing"] == first["captioned"]
    assert after.num_rows == before.num_rows
    # The errors were retried and replaced, not appended: still one row per broken input.
    errors, error_files = _errors(output)
    assert errors.num_rows == first["errors"]
    assert all(again["run_id"] in f.name for f in error_files)

    generate_scenes(grown / "more", count=20, seed=99)
    for image in (grown / "more" / "images").iterdir():
        image.rename(grown / "scenes" / "images" / image.name)
    third = _caption(grown, output, tiny_bundle, "--skip-existing")
    final, _ = _captions(output)
    assert third["captioned"] == 20
    assert final.num_rows == before.num_rows + 20
    assert len(set(final.column("image_uri").to_pylist())) == final.num_rows


def test_full_rerun_replaces_earlier_shards(archive, tiny_bundle, tmp_path):
    output = tmp_path / "out"
    first = _caption(archive, output, tiny_bundle)
    second = _caption(archive, output, tiny_bundle)
    captions, files = _captions(output)
    assert captions.num_rows == first["captioned"] == second["captioned"]
    assert all(second["run_id"] in f.name for f in files)
    # The first run's snapshot is replaced, not lost: it is still readable at its version.
    table = run_layout.captions_table(str(output))
    earlier = tables.committed_files(table, first["table_versions"]["captions"])
    assert earlier and all(first["run_id"] in Path(f).name for f in earlier)


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
        table, _ = _captions(output)
        return sorted(
            (r["image_uri"], r["caption"], r["width"], r["height"]) for r in table.to_pylist()
        )

    def errors(output):
        table, _ = _errors(output)
        return sorted((r["image_uri"], r["stage"], r["error_type"]) for r in table.to_pylist())

    assert rows(tmp_path / "one") == rows(tmp_path / "two")
    assert errors(tmp_path / "one") == errors(tmp_path / "two")


@pytest.fixture(scope="module")
def empty_glob_run(tiny_bundle, scenes, tmp_path_factory) -> tuple[Path, str, dict]:
    """A run given a glob that matches nothing beside one that matches the 40 scenes."""
    output = tmp_path_factory.mktemp("empty_glob") / "out"
    empty = str(output.parent / "nothing" / "*.jpg")
    argv = ["--input", empty, "--input", str(scenes / "images" / "*.png")]
    summary = run([*argv, "--output", str(output), "--model", tiny_bundle])
    return output, empty, summary


def test_a_glob_that_matches_nothing_beside_others_is_an_error_row(empty_glob_run):
    output, empty, summary = empty_glob_run
    errors, _ = _errors(output)
    assert [(r["image_uri"], r["stage"], r["error_type"]) for r in errors.to_pylist()] == [
        (empty, "read", "NoMatch")
    ]
    captions, _ = _captions(output)
    assert captions.num_rows == summary["captioned"] == 40
    assert summary["errors"] == 1 and summary["captions_committed"] is True


def test_a_run_whose_only_glob_matches_nothing_is_refused_and_keeps_the_captions(
    empty_glob_run, tiny_bundle, tmp_path, capsys
):
    """Such a run would replace the captions with nothing: it is refused at launch
    (``--allow-empty`` lets it go ahead) and commits nothing."""
    earlier, _, _ = empty_glob_run
    output = tmp_path / "out"
    shutil.copytree(earlier, output)
    before = {name: _table_state(output, name) for name in ("captions", "errors")}
    summary = Path(run_layout.summary_path(str(output))).read_text()
    argv = ["--input", str(tmp_path / "nothing" / "*.jpg"), "--output", str(output)]
    argv += ["--model", tiny_bundle]
    with pytest.raises(UserError, match="the inputs list nothing"):
        run(argv)
    capsys.readouterr()
    assert main(["caption", *argv]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    (line,) = [text for text in err if "caption: error:" in text]
    assert line.startswith("captioning caption: error: the inputs list nothing")
    assert {name: _table_state(output, name) for name in ("captions", "errors")} == before
    assert Path(run_layout.summary_path(str(output))).read_text() == summary


def _table_state(output: Path, name: str) -> tuple[int, list]:
    table = run_layout.join(str(output), name)
    rows = tables.read(table).sort_by("image_uri").to_pylist()
    return tables.version(table), rows
