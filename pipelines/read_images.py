"""ReadImages: input globs and manifests -> (uri, bytes), and read errors.

Everything goes through Beam's ``FileSystems``, so local paths and gs:// take the
same code path. A pattern that matches nothing and a file that cannot be read
each become one error row (stage ``read``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.error_rows import DeadLettersToErrorRows, error_row
from pipelines.metrics import IMAGES_READ, INPUTS, NAMESPACE

URI_COLUMN = "image_uri"


class ExpandPatterns(beam.DoFn):
    """A glob -> every matching file URI; a glob that matches nothing -> an error row."""

    def process(self, pattern: str):
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # noqa: BLE001 - an unreadable pattern is an error row
            matched, reason = [], f"{type(error).__name__}: {error}"
        else:
            reason = "pattern matched no files"
        files = [m.path for m in matched if not m.path.endswith("/")]
        if not files:
            Metrics.counter(NAMESPACE, "errors.read.NoMatch").inc()
            yield beam.pvalue.TaggedOutput("errors", error_row(pattern, "read", "NoMatch", reason))
        yield from files


def is_local(path: str) -> bool:
    """A path on this machine's disk (no scheme, or file://), not in a bucket."""
    return FileSystems.get_scheme(path) in (None, "file")


def _manifest_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    return "text"


def _csv_column(path: str) -> int:
    """The position of image_uri in a CSV manifest's header (read once, at construction)."""
    with FileSystems.open(path) as handle:
        header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8")), [])
    if URI_COLUMN not in header:
        raise ValueError(f"CSV manifest {path} has no {URI_COLUMN!r} column")
    return header.index(URI_COLUMN)


def manifest_lists_anything(path: str) -> bool:
    """Whether a manifest names at least one URI (reads only as far as the first one)."""
    kind = _manifest_kind(path)
    if kind == "parquet":
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return pq.ParquetFile(handle).metadata.num_rows > 0
    with FileSystems.open(path) as handle:
        lines = io.TextIOWrapper(handle, encoding="utf-8", errors="replace")
        if kind == "csv":
            next(lines, None)  # the header
        return any(line.strip() and not line.startswith("#") for line in lines)


def inputs_list_anything(patterns: Sequence[str], manifest: str | None) -> bool:
    """Whether any glob matches a file or the manifest names a URI: what a run checks
    before it may replace earlier captions."""
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern], limits=[2])[0].metadata_list
        except Exception:  # noqa: BLE001 - an unreadable pattern lists nothing
            continue
        if any(not m.path.endswith("/") for m in matched):
            return True
    return bool(manifest) and manifest_lists_anything(manifest)


class ReadManifest(beam.PTransform):
    """A manifest file -> its URIs. Read with Beam's splittable sources, so a manifest
    of a hundred million lines is read in parallel."""

    def __init__(self, path: str, validate: bool = True) -> None:
        super().__init__()
        self.path = path
        # Real runs look at the manifest when the pipeline is built, so a missing file or
        # column fails before any worker starts; an offline dry run cannot look.
        self.validate = validate

    def expand(self, pipeline):
        kind = _manifest_kind(self.path)
        if kind == "parquet":
            rows = pipeline | "ReadParquetManifest" >> beam.io.ReadFromParquet(
                self.path, columns=[URI_COLUMN], validate=self.validate
            )
            return rows | "TakeUri" >> beam.Map(lambda row: row[URI_COLUMN])
        if kind == "csv":
            lines = pipeline | "ReadCsvManifest" >> beam.io.ReadFromText(
                self.path, skip_header_lines=1, validate=self.validate
            )
            if self.validate:
                column = _csv_column(self.path)
            else:  # found on a worker instead
                column = beam.pvalue.AsSingleton(
                    pipeline
                    | "ManifestPath" >> beam.Create([self.path])
                    | "FindUriColumn" >> beam.Map(_csv_column)
                )
            return lines | "TakeUri" >> beam.Map(
                lambda line, column: next(csv.reader([line]))[column], column
            )
        lines = pipeline | "ReadTextManifest" >> beam.io.ReadFromText(
            self.path, validate=self.validate
        )
        return lines | "SkipComments" >> beam.Filter(lambda line: not line.startswith("#"))


class ListInputs(beam.PTransform):
    """Globs and manifest -> distinct URIs (tag ``uris``) and read errors (tag ``errors``)."""

    def __init__(
        self, patterns: Sequence[str], manifest: str | None, validate: bool = True
    ) -> None:
        super().__init__()
        self.patterns = list(patterns)
        self.manifest = manifest
        self.validate = validate

    def expand(self, pipeline):
        sources = []
        errors = []
        if self.patterns:
            expanded = (
                pipeline
                | "Patterns" >> beam.Create(self.patterns)
                | "ExpandPatterns"
                >> beam.ParDo(ExpandPatterns()).with_outputs("errors", main="uris")
            )
            sources.append(expanded.uris)
            errors.append(expanded.errors)
        if self.manifest:
            sources.append(pipeline | "ReadManifest" >> ReadManifest(self.manifest, self.validate))
        uris = (
            sources
            | "AllUris" >> beam.Flatten()
            | "Strip" >> beam.Map(str.strip)
            | "DropBlank" >> beam.Filter(bool)
            # The same image listed twice is captioned once.
            | "Distinct" >> beam.Distinct()
        )
        if not errors:
            errors.append(pipeline | "NoPatternErrors" >> beam.Create([]))
        return {"uris": uris, "errors": errors | "PatternErrors" >> beam.Flatten()}


class ReadBytes(beam.DoFn):
    def process(self, uri: str):
        Metrics.counter(NAMESPACE, INPUTS).inc()
        with FileSystems.open(uri) as handle:
            data = handle.read()
        Metrics.counter(NAMESPACE, IMAGES_READ).inc()
        yield uri, data


class ReadImages(beam.PTransform):
    """URIs -> (uri, bytes) on the workers; failures become read error rows."""

    def expand(self, uris):
        read = uris | "ReadBytes" >> beam.ParDo(ReadBytes()).with_exception_handling()
        good, bad = read
        errors = bad | "ReadErrorRows" >> beam.ParDo(DeadLettersToErrorRows("read"))
        return {"images": good, "errors": errors}
