"""Delta Lake tables (through ``deltalake``): what readers see changes only at a commit.

Beam workers write Parquet data files inside a table's folder; nothing reads them until
one transaction adds them to the table's log. A run that dies before that commit leaves
the table exactly as it was, and its files are removed later by ``vacuum``.

Commits are explicit actions, not ``mode="overwrite"``, so that a run removes exactly
the files of the snapshot it started from:

- ``replace``: remove the start snapshot's files, add the run's, and only if nothing
  else was committed since that snapshot (no rebase: delta-rs' conflict checker lets
  two replaces of an empty table both land, and would let a replace land on top of a
  concurrent append). Otherwise ``CommitConflictError``: the run commits nothing.
- ``append``: add the run's files; concurrent appends both land.
- ``replace_read``: like ``replace``, but a conflict is retried on the new snapshot,
  removing only what is left of the start snapshot (the errors table: each run replaces
  the errors it retried and keeps those another run committed meanwhile).

Each commit carries an application transaction ``(app_id, 1)``: a commit step that is
retried (a Beam bundle run twice) sees its own earlier commit and does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

from captioning.errors import CommitConflictError, UserError
from captioning.storage.schemes import is_gcs, is_local, local_path

log = logging.getLogger("captioning.tables")

DEFAULT_RETENTION_HOURS = 168  # a week of earlier versions to read back (time travel)
MODES = ("append", "replace", "replace_read")
_RETRIES = 8


@dataclass(frozen=True)
class DataFile:
    """A Parquet file a run wrote inside a table's folder, ready to be committed."""

    path: str  # relative to the table's folder
    size: int
    rows: int


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs' object-store settings. On ``gs://`` it finds Google credentials itself.
    Against an emulator it needs the emulator's XML API endpoint (delta-rs does not speak
    the JSON API): ``CAPTIONING_GCS_XML_ENDPOINT``, else ``STORAGE_EMULATOR_HOST`` (right
    for fake-gcs-server, which serves both), unsigned."""
    endpoint = os.environ.get("CAPTIONING_GCS_XML_ENDPOINT") or os.environ.get(
        "STORAGE_EMULATOR_HOST"
    )
    if is_gcs(uri) and endpoint:
        # object_store's way to an emulator: a service-account key naming the endpoint,
        # with OAuth off (no token request to Google, no metadata server).
        key = {
            "gcs_base_url": endpoint,
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }
        return {"google_service_account_key": json.dumps(key), "allow_http": "true"}
    return None


def _table_uri(uri: str) -> str:
    if is_local(uri):
        return os.path.abspath(local_path(uri))
    return uri.rstrip("/")


def _open(uri: str, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(_table_uri(uri), version=version, storage_options=storage_options(uri))


def exists(uri: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(_table_uri(uri), storage_options=storage_options(uri))


def ensure_table(uri: str, schema: pa.Schema, retention_hours: int) -> int:
    """Create an empty table if there is none; return the current version (the snapshot a
    run starts from)."""
    from deltalake import DeltaTable

    if not exists(uri):
        interval = f"interval {int(retention_hours)} hours"
        try:
            DeltaTable.create(
                _table_uri(uri),
                schema,
                mode="ignore",  # a concurrent run may create it first; then theirs stands
                configuration={
                    "delta.deletedFileRetentionDuration": interval,
                    "delta.logRetentionDuration": interval,
                },
                storage_options=storage_options(uri),
            )
        except Exception as error:  # noqa: BLE001 - raced a concurrent create: reload
            if not exists(uri):
                raise UserError(f"cannot create table {uri}: {_first_line(error)}") from None
    return version(uri)


def version(uri: str) -> int:
    return _open(uri).version()


def committed_files(uri: str, at_version: int | None = None) -> list[str]:
    """The data files of a snapshot, as full URIs (what readers of that version read)."""
    return list(_open(uri, at_version).file_uris())


def dataset(uri: str, at_version: int | None = None) -> ds.Dataset:
    """A pyarrow dataset of the committed snapshot (DuckDB and polars read it too)."""
    return _open(uri, at_version).to_pyarrow_dataset()


def read(uri: str, columns: Sequence[str] | None = None, at_version: int | None = None):
    return dataset(uri, at_version).to_table(columns=list(columns) if columns else None)


def committed_by(uri: str, app_id: str) -> bool:
    """Whether a transaction with this application id has committed to the table."""
    return exists(uri) and (_open(uri).transaction_version(app_id) or 0) >= 1


def commit(
    uri: str,
    files: Sequence[DataFile],
    mode: str,
    start_version: int,
    app_id: str,
    schema: pa.Schema,
    metadata: dict[str, str] | None = None,
) -> int | None:
    """Commit a run's data files in one transaction; returns the new version, or None
    when ``app_id`` had already committed (a retried commit step)."""
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import CommitFailedError

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    # The latest snapshot, not the start one: a retried step whose first try committed.
    if committed_by(uri, app_id):
        return None
    start = set() if mode == "append" else set(committed_files_relative(uri, start_version))
    properties = CommitProperties(
        custom_metadata={"captioning": json.dumps({"mode": mode, **(metadata or {})})},
        app_transactions=[Transaction(app_id, 1)],
        # A replace must start from the latest snapshot: no retry, no rebase.
        max_commit_retries=0 if mode == "replace" else _RETRIES,
    )
    snapshot = _open(uri, start_version)
    for attempt in range(_RETRIES):
        if (snapshot.transaction_version(app_id) or 0) >= 1:
            return None
        remove = start & set(committed_files_relative(uri, snapshot.version()))
        try:
            snapshot.create_write_transaction(
                [*_remove_actions(remove), *_add_actions(files)],
                mode="append",  # explicit removes; see the module docstring
                schema=schema,
                commit_properties=properties,
            )
        except CommitFailedError as error:
            if mode != "replace_read" or attempt == _RETRIES - 1:
                raise CommitConflictError(
                    f"{uri}: another run committed a conflicting change while this run "
                    f"was working ({_first_line(error)}); this run committed nothing "
                    "there, rerun it"
                ) from None
            snapshot = _open(uri)  # retry against the latest snapshot
            continue
        return _open(uri).version()
    raise AssertionError("unreachable")


def committed_files_relative(uri: str, at_version: int | None) -> list[str]:
    table = _open(uri, at_version)
    actions = table.get_add_actions(flatten=True)
    return [str(path) for path in actions.column("path").to_pylist()]


def _add_actions(files: Sequence[DataFile]):
    from deltalake.transaction import AddAction

    now = int(time.time() * 1000)
    return [
        AddAction(file.path, file.size, {}, now, True, json.dumps({"numRecords": file.rows}))
        for file in files
    ]


def _remove_actions(paths: set[str]):
    from deltalake.transaction import RemoveAction

    now = int(time.time() * 1000)
    return [RemoveAction(path, True, now) for path in sorted(paths)]


def vacuum(uri: str, retention_hours: int) -> list[str]:
    """Delete files older than the retention that no version within it needs: replaced
    data files, and files of runs that never committed (killed, failed)."""
    table = _open(uri)
    return table.vacuum(
        retention_hours=int(retention_hours),
        dry_run=False,
        enforce_retention_duration=False,  # the flag is the user's own choice
        full=True,  # also files that were never committed, not just removed ones
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def append_rows(uri: str, rows: pa.Table, app_id: str) -> None:
    """Append rows that are not yet in any file (a one-off conversion, not a run's
    output: runs commit the files Beam wrote, in place)."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    if committed_by(uri, app_id):
        return
    write_deltalake(
        _table_uri(uri),
        rows,
        mode="append",
        storage_options=storage_options(uri),
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id, 1)]),
    )
