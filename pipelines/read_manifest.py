"""ReadManifest: a manifest file -> the URIs it lists, and one error row per bad line.

A manifest is plain text (one URI per line, ``#`` comments), CSV, TSV, JSON Lines or
Parquet, told apart by its name; any of the text kinds may be gzipped (``.gz``).
CSV and TSV name their columns in a header line; ``uri_column`` (``--uri-column``)
picks the column, or the JSON key, that holds the URI. Blank lines name nothing and
are skipped (counted as ``manifest_blank_lines``); a line that is not a URI (too few
fields, bad JSON, a null) is an error row of stage ``read`` keyed by the manifest.

Manifests are read with Beam's splittable sources, so a manifest of a hundred million
lines is read in parallel.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
from collections.abc import Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from captioning import storage
from captioning.errors import UserError
from pipelines.error_rows import counted_error_row
from pipelines.metrics import MANIFEST_BLANK_LINES, NAMESPACE

URI_COLUMN = "image_uri"
ERRORS = "errors"
_DELIMITERS = {"csv": ",", "tsv": "\t"}


def manifest_kind(path: str) -> str:
    """parquet, csv, tsv, jsonl or text, from the file name (``.gz`` looked through)."""
    name = path.lower().removesuffix(".gz")
    for suffix, kind in (
        (".parquet", "parquet"),
        (".csv", "csv"),
        (".tsv", "tsv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
    ):
        if name.endswith(suffix):
            return kind
    return "text"


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[io.TextIOWrapper]:
    """The manifest as text, gunzipped when its name ends in .gz (as ReadFromText does)."""
    with storage.open_binary(path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw
        yield io.TextIOWrapper(stream, encoding="utf-8", errors="replace")


def _header(path: str, kind: str) -> list[str]:
    with _open_text(path) as text:
        return next(csv.reader(text, delimiter=_DELIMITERS[kind]), [])


def column_position(path: str, column: str = URI_COLUMN) -> int:
    """Where ``column`` is in a CSV or TSV manifest's header; a UserError if nowhere."""
    header = _header(path, manifest_kind(path))
    if column not in header:
        raise UserError(
            f"manifest {path} has no {column!r} column (its header: {', '.join(header)}); "
            "name the column with --uri-column"
        )
    return header.index(column)


def check_manifest(path: str, column: str = URI_COLUMN) -> None:
    """Fail before any worker starts when the manifest's URI column is missing."""
    kind = manifest_kind(path)
    if kind in _DELIMITERS:
        column_position(path, column)
    elif kind == "parquet":
        with storage.open_binary(path) as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
        if column not in names:
            raise UserError(
                f"Parquet manifest {path} has no {column!r} column (it has: "
                f"{', '.join(names)}); name the column with --uri-column"
            )


def manifest_lists_anything(path: str) -> bool:
    """Whether a manifest has at least one non-blank entry (reads only that far)."""
    kind = manifest_kind(path)
    if kind == "parquet":
        with storage.open_binary(path) as handle:
            return pq.ParquetFile(handle).metadata.num_rows > 0
    with _open_text(path) as lines:
        if kind in _DELIMITERS:
            next(lines, None)  # the header
        return any(line.strip() and not line.startswith("#") for line in lines)


class ParseLines(beam.DoFn):
    """A manifest line -> its URI, or (tagged ``errors``) an error row saying why not."""

    def __init__(self, path: str, kind: str, column: str) -> None:
        self.path = path
        self.kind = kind
        self.column = column

    def process(self, line: str, position: int | None = None):
        if not line.strip() or (self.kind == "text" and line.startswith("#")):
            Metrics.counter(NAMESPACE, MANIFEST_BLANK_LINES).inc()
            return
        try:
            uri = self._uri(line, position)
        except ValueError as error:
            row = counted_error_row(self.path, "read", "BadManifestLine", str(error))
            yield beam.pvalue.TaggedOutput(ERRORS, row)
            return
        yield uri

    def _uri(self, line: str, position: int | None) -> str:
        shown = repr(line[:200])
        if self.kind == "text":
            return line.strip()
        if self.kind == "jsonl":
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {shown} is not JSON ({error.msg})") from None
            uri = value.get(self.column) if isinstance(value, dict) else None
            if not isinstance(uri, str) or not uri.strip():
                raise ValueError(f"line {shown} has no string {self.column!r}")
            return uri.strip()
        fields = next(csv.reader([line], delimiter=_DELIMITERS[self.kind]), [])
        if position is None or position >= len(fields):
            raise ValueError(
                f"line {shown} has {len(fields)} field(s); {self.column!r} is field "
                f"{(position or 0) + 1}"
            )
        if not fields[position].strip():
            raise ValueError(f"line {shown} has an empty {self.column!r}")
        return fields[position].strip()


class CheckParquetRows(beam.DoFn):
    """A Parquet row -> its URI, or an error row for a null or empty one."""

    def __init__(self, path: str, column: str) -> None:
        self.path = path
        self.column = column

    def process(self, row: dict):
        uri = row.get(self.column)
        if isinstance(uri, str) and uri.strip():
            yield uri.strip()
            return
        message = f"a row whose {self.column!r} is {'null' if uri is None else repr(uri)}"
        row = counted_error_row(self.path, "read", "BadManifestLine", message)
        yield beam.pvalue.TaggedOutput(ERRORS, row)


class ReadManifest(beam.PTransform):
    """A manifest file -> {"uris", "errors"}."""

    def __init__(self, path: str, column: str = URI_COLUMN, validate: bool = True) -> None:
        super().__init__()
        self.path = path
        self.column = column
        # Real runs look at the manifest when the pipeline is built, so a missing file or
        # column fails before any worker starts; an offline dry run cannot look.
        self.validate = validate

    def expand(self, pipeline):
        kind = manifest_kind(self.path)
        if self.validate and kind == "parquet":
            check_manifest(self.path, self.column)  # CSV and TSV: by column_position below
        if kind == "parquet":
            rows = pipeline | "ReadParquetManifest" >> beam.io.ReadFromParquet(
                self.path, columns=[self.column], validate=self.validate
            )
            parsed = rows | "CheckRows" >> beam.ParDo(
                CheckParquetRows(self.path, self.column)
            ).with_outputs(ERRORS, main="uris")
            return {"uris": parsed.uris, "errors": parsed[ERRORS]}
        lines = pipeline | "ReadManifestLines" >> beam.io.ReadFromText(
            self.path, skip_header_lines=1 if kind in _DELIMITERS else 0, validate=self.validate
        )
        position = None
        if kind in _DELIMITERS and self.validate:
            position = column_position(self.path, self.column)
        elif kind in _DELIMITERS:  # found on a worker instead
            position = beam.pvalue.AsSingleton(
                pipeline
                | "ManifestPath" >> beam.Create([self.path])
                | "FindUriColumn" >> beam.Map(column_position, self.column)
            )
        parsed = lines | "ParseLines" >> beam.ParDo(
            ParseLines(self.path, kind, self.column), position
        ).with_outputs(ERRORS, main="uris")
        return {"uris": parsed.uris, "errors": parsed[ERRORS]}
