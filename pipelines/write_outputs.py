"""WriteCaptions / WriteErrors: Parquet data files with explicit schemas, inside each table.

Each run writes ``TABLE/part-<run id>-SSSSS-of-NNNNN.parquet`` in parallel on the
workers. Readers do not see them until ``pipelines.commit_tables`` adds them to the
table's log in one transaction.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from captioning import run_layout


class WriteTable(beam.PTransform):
    """Rows -> the run's Parquet files in ``table``; outputs the written file paths."""

    def __init__(self, table: str, run_id: str, schema: pa.Schema) -> None:
        super().__init__()
        self.table = table
        self.run_id = run_id
        self.schema = schema

    def expand(self, rows):
        return rows | "WriteToParquet" >> beam.io.WriteToParquet(
            run_layout.data_file_prefix(self.table, self.run_id),
            schema=self.schema,
            file_name_suffix=".parquet",
            codec="snappy",
        )


def WriteCaptions(output: str, run_id: str) -> WriteTable:
    return WriteTable(run_layout.captions_table(output), run_id, run_layout.CAPTIONS_SCHEMA)


def WriteErrors(output: str, run_id: str) -> WriteTable:
    return WriteTable(run_layout.errors_table(output), run_id, run_layout.ERRORS_SCHEMA)
