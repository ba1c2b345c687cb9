"""The errors table of a run, streamed: counts by stage and type, and the first rows up to a cap.

The table is given as the data files of one committed version, as for ``sampling``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from captioning.errors import UserError
from captioning.reports.sampling import iter_batches

ERROR_COLUMNS = ("image_uri", "stage", "error_type", "message", "failed_at")


@dataclass
class ErrorSummary:
    total: int
    by_stage_and_type: dict[tuple[str, str], int]  # most frequent first
    rows: list[dict]  # at most the cap, sorted by stage, type and URI
    files: list[str]

    @property
    def truncated(self) -> bool:
        return len(self.rows) < self.total


def collect_errors(files: list[str], max_rows: int, batch_size: int = 65_536) -> ErrorSummary:
    counts: Counter[tuple[str, str]] = Counter()
    rows: list[dict] = []
    total = 0
    try:
        batches = iter_batches(files, list(ERROR_COLUMNS), batch_size)
        for batch in batches:
            total += batch.num_rows
            grouped = pa.Table.from_batches([batch]).group_by(["stage", "error_type"])
            for entry in grouped.aggregate([([], "count_all")]).to_pylist():
                counts[(entry["stage"], entry["error_type"])] += entry["count_all"]
            if len(rows) < max_rows:
                rows.extend(batch.slice(0, max_rows - len(rows)).to_pylist())
    except (KeyError, pa.ArrowInvalid) as error:
        raise UserError(f"{files[0]} is not an errors table: {error}") from None
    rows.sort(key=lambda row: (row["stage"], row["error_type"], row["image_uri"]))
    return ErrorSummary(total, dict(counts.most_common()), rows, files)
