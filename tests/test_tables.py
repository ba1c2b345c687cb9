"""captioning.tables on local disk: the commit modes, and a commit step that is retried."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioning import run_layout, tables
from captioning.errors import CommitConflictError

SCHEMA = run_layout.ERRORS_SCHEMA


def data_file(table, name: str, uris: list[str]) -> tables.DataFile:
    rows = pa.table(
        {
            "image_uri": uris,
            "stage": ["read"] * len(uris),
            "error_type": ["E"] * len(uris),
            "message": ["m"] * len(uris),
            "failed_at": pa.array([0] * len(uris), pa.timestamp("us", tz="UTC")),
        },
        schema=SCHEMA,
    )
    path = table / f"{name}.parquet"
    pq.write_table(rows, path)
    return tables.DataFile(path.name, path.stat().st_size, len(uris))


def uris(table) -> list[str]:
    return sorted(tables.read(str(table)).column("image_uri").to_pylist())


def test_a_retried_commit_step_commits_once(tmp_path):
    table = tmp_path / "errors"
    start = tables.ensure_table(str(table), SCHEMA, 168)
    first = [data_file(table, "a", ["a"])]
    tables.commit(str(table), first, "append", start, "run-0", SCHEMA)
    start = tables.version(str(table))
    files = [data_file(table, "b", ["b"])]
    assert tables.commit(str(table), files, "replace", start, "run-1", SCHEMA) is not None
    # A worker retried after the commit landed: same files, same start, same app id.
    assert tables.commit(str(table), files, "replace", start, "run-1", SCHEMA) is None
    assert uris(table) == ["b"]


def test_replace_refuses_when_anything_was_committed_since_its_start(tmp_path):
    table = tmp_path / "errors"
    start = tables.ensure_table(str(table), SCHEMA, 168)  # empty: nothing to remove
    tables.commit(str(table), [data_file(table, "a", ["a"])], "append", start, "other", SCHEMA)
    with pytest.raises(CommitConflictError, match="another run committed"):
        tables.commit(str(table), [data_file(table, "b", ["b"])], "replace", start, "mine", SCHEMA)
    assert uris(table) == ["a"]


def test_replace_read_keeps_what_a_concurrent_run_added(tmp_path):
    table = tmp_path / "errors"
    start = tables.ensure_table(str(table), SCHEMA, 168)
    tables.commit(str(table), [data_file(table, "old", ["old"])], "append", start, "r0", SCHEMA)
    start = tables.version(str(table))
    tables.commit(str(table), [data_file(table, "a", ["a"])], "replace_read", start, "r1", SCHEMA)
    tables.commit(str(table), [data_file(table, "b", ["b"])], "replace_read", start, "r2", SCHEMA)
    assert uris(table) == ["a", "b"]  # "old" replaced once, neither run's rows lost
