"""WriteCaptions / WriteErrors: Parquet with explicit schemas, one file set per run.

Each run writes ``PREFIX-<run id>-SSSSS-of-NNNNN.parquet`` (and the same under
``PREFIX_errors``). Once both tables are written, ``RemoveStaleShards`` deletes
the files of earlier runs that this run supersedes: every earlier error file
(their URIs were retried), and every earlier caption file unless the run was
incremental (``--skip-existing`` keeps them, since it only adds new URIs). A run
that fails before that point leaves the earlier output untouched.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.schemas import CAPTIONS_SCHEMA, ERRORS_SCHEMA

log = logging.getLogger("captioning.pipeline")


def captions_prefix(output: str) -> str:
    return output


def errors_prefix(output: str) -> str:
    return f"{output}_errors"


def table_glob(prefix: str) -> str:
    return f"{prefix}-*.parquet"


class WriteTable(beam.PTransform):
    def __init__(self, prefix: str, run_id: str, schema) -> None:
        super().__init__()
        self.prefix = prefix
        self.run_id = run_id
        self.schema = schema

    def expand(self, rows):
        return rows | "WriteToParquet" >> beam.io.WriteToParquet(
            f"{self.prefix}-{self.run_id}",
            schema=self.schema,
            file_name_suffix=".parquet",
            codec="snappy",
        )


def WriteCaptions(output: str, run_id: str) -> WriteTable:
    return WriteTable(captions_prefix(output), run_id, CAPTIONS_SCHEMA)


def WriteErrors(output: str, run_id: str) -> WriteTable:
    return WriteTable(errors_prefix(output), run_id, ERRORS_SCHEMA)


class RemoveStaleShards(beam.DoFn):
    """Runs once, after both tables are written (the written file list is its input)."""

    def __init__(self, output: str, run_id: str, keep_earlier_captions: bool) -> None:
        self.output = output
        self.run_id = run_id
        self.keep_earlier_captions = keep_earlier_captions

    def process(self, written):
        prefixes = [errors_prefix(self.output)]
        if not self.keep_earlier_captions:
            prefixes.append(captions_prefix(self.output))
        stale = []
        for prefix in prefixes:
            for metadata in FileSystems.match([table_glob(prefix)])[0].metadata_list:
                name = metadata.path
                if f"{prefix}-{self.run_id}-" not in name and name not in written:
                    stale.append(name)
        if stale:
            FileSystems.delete(stale)
            log.info("removed %d files of earlier runs", len(stale))
        yield len(stale)
