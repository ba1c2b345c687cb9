"""Output written in the layout before tables (``--output PREFIX`` with ``PREFIX-*.parquet``
captions beside it) is read once: an incremental run imports those captions into the new
captions table, so it does not caption the archive again.

The earlier files are left where they are and never read again; the log says so.
"""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from captioning import run_layout, storage, tables

log = logging.getLogger("captioning.pipeline")

IMPORT_APP_ID = "captioning-import-legacy-prefix"


def legacy_caption_files(output: str) -> list[str]:
    pattern = run_layout.legacy_patterns(output)["captions"]
    return storage.glob(pattern)


def _latest_per_uri(rows: pa.Table) -> pa.Table:
    """One row per image: the old layout could hold a run's rows twice after a kill."""
    order = pc.sort_indices(
        rows, sort_keys=[("image_uri", "ascending"), ("captioned_at", "descending")]
    )
    rows = rows.take(order)
    uris = rows.column("image_uri")
    if len(uris) == 0:
        return rows
    first = pc.not_equal(uris.slice(1), uris.slice(0, len(uris) - 1))
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks()])
    return rows.filter(keep)


def import_legacy_captions(output: str, start_version: int) -> int:
    """Import ``PREFIX-*.parquet`` captions into an empty captions table, once; returns
    the number of rows imported (0 when there is nothing to import)."""
    files = legacy_caption_files(output)
    table = run_layout.captions_table(output)
    if not files or start_version > 0 or tables.committed_by(table, IMPORT_APP_ID):
        return 0
    parts = []
    for path in files:
        parts.append(pq.read_table(io.BytesIO(storage.read_bytes(path))))
    rows = pa.concat_tables(parts).cast(run_layout.CAPTIONS_SCHEMA)
    rows = _latest_per_uri(rows)
    tables.append_rows(table, rows, IMPORT_APP_ID)
    log.warning(
        "imported %d captions of the old layout (%s, %d files) into %s; those files are "
        "not read again and can be deleted",
        rows.num_rows,
        run_layout.legacy_patterns(output)["captions"],
        len(files),
        table,
    )
    return rows.num_rows
