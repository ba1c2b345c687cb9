"""The one clean-up of Beam's temporary folders, shared by the caption and features jobs,
on local disk and in a bucket (the GCS emulator with the real client)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from captioning import storage
from pipelines.launcher import remove_beam_temp
from tests.conftest import GCS_BUCKET

THIS_RUN = "20261122T010000-aaaaaa"
REPLACED = "20261121T010000-bbbbbb"
KILLED_LONG_AGO = "20261101T010000-cccccc"
STILL_WRITING = "20261122T005959-dddddd"


@pytest.fixture(params=["local", "gs"])
def table(request, tmp_path, gcs) -> str:
    return {"local": str(tmp_path / "errors"), "gs": f"gs://{GCS_BUCKET}/{tmp_path.name}/errors"}[
        request.param
    ]


def _temp_folder(table: str, run: str) -> str:
    folder = storage.join(table, f"beam-temp-part-{run}-0123456789abcdef")
    storage.write_bytes(storage.join(folder, "0123-4567"), b"half a file")
    return folder


def _age(folder: str, hours: float) -> None:
    """Local only: a bucket's objects cannot be back-dated, so there a retention of 0
    stands in for the passing of time."""
    old = time.time() - hours * 3600
    for path in [Path(folder), *Path(folder).rglob("*")]:
        os.utime(path, (old, old))


def test_this_runs_the_replaced_runs_and_long_killed_runs_folders_go(table):
    folders = {run: _temp_folder(table, run) for run in (THIS_RUN, REPLACED, STILL_WRITING)}
    folders[KILLED_LONG_AGO] = _temp_folder(table, KILLED_LONG_AGO)
    not_ours = storage.join(table, "beam-temp-something-else", "file")
    storage.write_bytes(not_ours, b"not a run's")
    committed = storage.join(table, f"part-{THIS_RUN}-00000-of-00001.parquet")
    storage.write_bytes(committed, b"data")
    local = storage.is_local(table)
    if local:
        _age(folders[KILLED_LONG_AGO], hours=200)

    removed = remove_beam_temp(table, THIS_RUN, retention_hours=168, replaced=REPLACED)

    gone = [THIS_RUN, REPLACED, *([KILLED_LONG_AGO] if local else [])]
    assert sorted(removed) == sorted(
        path for run in gone for path in (folders[run], storage.join(folders[run], "0123-4567"))
    )
    remaining = storage.glob(storage.join(table, "**"))
    assert storage.join(folders[STILL_WRITING], "0123-4567") in remaining
    assert not_ours in remaining and committed in remaining
    if local:
        assert not any(Path(folders[run]).exists() for run in gone)

    # Once the retention has passed, every run's leftovers go; the rest stays.
    remove_beam_temp(table, THIS_RUN, retention_hours=0)
    assert storage.glob(storage.join(table, "**")) == sorted([committed, not_ours])
