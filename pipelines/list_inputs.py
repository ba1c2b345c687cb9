"""ListInputs: ``--input`` globs and ``--input-manifest`` -> the distinct input URIs.

Every URI is normalised once, here (``captioning.sources.uris``): ``file://`` and
relative paths become absolute paths, so one file has one row whichever way it was
named. Globs are matched by ``captioning.storage.glob``, the one glob of the project
(``*`` stays inside a folder, ``**`` crosses folders), local ones and ``gs://`` alike;
brace ranges
(``shards-{000..099}.tar``) are expanded first. ``http(s)://`` URLs are inputs as
they stand. WebDataset shards (``.tar``) come out apart from the images, because
one shard holds many inputs.

Every pattern or line that names no readable input is an error row of stage ``read``:
a glob that matches nothing, a folder a glob matched, a scheme the job cannot read,
a bad manifest line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import apache_beam as beam

from captioning import storage
from captioning.sources import uris as uri_kinds
from captioning.sources.tar_shards import expand_braces, is_shard
from pipelines.error_rows import counted_error_row
from pipelines.read_manifest import URI_COLUMN, ReadManifest, manifest_lists_anything

ERRORS = "errors"
SHARDS = "shards"


def match_pattern(pattern: str, limit: int | None = None) -> list[str]:
    """Files a glob matches (one URL for an http(s) URL); raises what the match raises."""
    if uri_kinds.is_web(pattern):
        return [pattern]
    return storage.glob(pattern, limit)


class ExpandPatterns(beam.DoFn):
    """A glob -> every URI it matches; a glob that matches nothing, and each folder it
    matches, -> an error row."""

    def process(self, pattern: str):
        # A glob lists files only, so a folder named like an image would vanish with no
        # row. ``**`` is how one asks to walk folders: those it passes are not inputs.
        folders = storage.folders(pattern) if uri_kinds.is_local(pattern) else []
        for folder in folders:
            message = f"{folder} is a folder, not an image (a glob ending in /** reads inside)"
            yield beam.pvalue.TaggedOutput(
                ERRORS, counted_error_row(folder, "read", "IsAFolder", message)
            )
        try:
            files = match_pattern(pattern)
        except Exception as error:  # noqa: BLE001 - an unreadable pattern is an error row
            files, reason = [], f"{type(error).__name__}: {error}"
        else:
            reason = "pattern matched no files"
        if not files and not folders:
            yield beam.pvalue.TaggedOutput(
                ERRORS, counted_error_row(pattern, "read", "NoMatch", reason)
            )
        yield from files


class NormalizeUris(beam.DoFn):
    """A listed URI -> its one spelling, or an error row for a scheme the job cannot read."""

    def __init__(self, base: str) -> None:
        self.base = base

    def process(self, uri: str):
        try:
            yield uri_kinds.normalize(uri, self.base)
        except uri_kinds.UnsupportedUriError as error:
            yield beam.pvalue.TaggedOutput(
                ERRORS, counted_error_row(uri, "read", error.error_type, str(error))
            )


def normalize_patterns(patterns: Sequence[str], base: str | None = None) -> list[str]:
    """``--input`` values, brace ranges expanded and each in its one spelling; a
    UnsupportedUriError (one line) for a scheme the job cannot read."""
    expanded = [name for pattern in patterns for name in expand_braces(pattern)]
    return [uri_kinds.normalize(pattern, base) for pattern in expanded]


def inputs_list_anything(
    patterns: Sequence[str], manifest: str | None, base: str | None = None
) -> bool:
    """Whether any glob matches a file or the manifest names a URI: what a run checks
    before it may replace earlier captions."""
    for pattern in normalize_patterns(patterns, base):
        try:
            if match_pattern(pattern, limit=2):
                return True
        except Exception:  # noqa: BLE001 - an unreadable pattern lists nothing
            continue
    return bool(manifest) and manifest_lists_anything(manifest)


class ListInputs(beam.PTransform):
    """Globs and a manifest -> {"uris": distinct image URIs, "shards": distinct
    WebDataset shard URIs, "errors": read error rows}.

    ``base`` is the folder relative paths are taken from: the launcher's working
    directory (a worker's would mean nothing)."""

    def __init__(
        self,
        patterns: Sequence[str],
        manifest: str | None,
        validate: bool = True,
        uri_column: str = URI_COLUMN,
        base: str | None = None,
    ) -> None:
        super().__init__()
        self.base = base or os.getcwd()
        self.patterns = normalize_patterns(patterns, self.base)
        self.manifest = manifest
        self.validate = validate
        self.uri_column = uri_column

    def expand(self, pipeline):
        sources = []
        errors = [pipeline | "NoListingErrors" >> beam.Create([])]
        if self.patterns:
            expanded = (
                pipeline
                | "Patterns" >> beam.Create(self.patterns)
                | "ExpandPatterns" >> beam.ParDo(ExpandPatterns()).with_outputs(ERRORS, main="uris")
            )
            sources.append(expanded.uris)
            errors.append(expanded[ERRORS])
        if self.manifest:
            listed = pipeline | "ReadManifest" >> ReadManifest(
                self.manifest, self.uri_column, self.validate
            )
            sources.append(listed["uris"])
            errors.append(listed["errors"])
        if not sources:
            sources.append(pipeline | "NoUris" >> beam.Create([]))
        normalized = (
            sources
            | "AllUris" >> beam.Flatten()
            | "Normalize" >> beam.ParDo(NormalizeUris(self.base)).with_outputs(ERRORS, main="uris")
        )
        errors.append(normalized[ERRORS])
        shards, images = (
            normalized.uris
            # The same image listed twice (or once relative, once absolute) is read once.
            | "Distinct" >> beam.Distinct()
            | "ShardsApart" >> beam.Partition(lambda uri, _: 0 if is_shard(uri) else 1, 2)
        )
        return {"uris": images, SHARDS: shards, ERRORS: errors | "ListingErrors" >> beam.Flatten()}
