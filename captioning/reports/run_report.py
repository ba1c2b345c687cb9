"""``build_report``: a caption run's output folder -> OUT/index.html (and thumbnails, if asked).

The run's layout is ``captioning.run_layout``'s: ``DIR/captions`` and ``DIR/errors`` are
Delta tables, ``DIR/summary.json`` is the last run's summary. Each table is read at one
fixed version, through ``captioning.tables``: only the data files that version committed,
never a glob of the folder, where the uncommitted files of killed or held-back runs lie
too. Those files are streamed one by one (``sampling``, ``error_rows``), so memory stays
bounded whatever the table's size.

With ``version`` the report shows an earlier captions table version (time travel, as long
as the tables' retention keeps it), with the errors the same run committed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field

from captioning import run_layout, storage, tables
from captioning.errors import UserError
from captioning.reports.error_rows import collect_errors
from captioning.reports.evaluation_rows import read_worst
from captioning.reports.html_report import ReportContent, ShownImage, render_report
from captioning.reports.sampling import sample_captions
from captioning.reports.thumbnails import Thumbnail, make_thumbnails

log = logging.getLogger("captioning.report")

EMBED, FILES = "embed", "files"
# The key of the commit metadata the caption job writes (``pipelines.commit_tables``).
COMMIT_METADATA_KEY = "captioning"


@dataclass(frozen=True)
class ReportOptions:
    lowest: int = 50
    highest: int = 50
    random: int = 100
    seed: int = 0
    max_errors: int = 1000
    worst: int = 20  # rows of the evaluation's worst-CIDEr list
    thumbnails: str = EMBED  # or FILES: JPEGs in DIR/thumbnails/
    thumbnail_size: int = 160
    version: int | None = None  # captions table version to report; None: the latest


@dataclass(frozen=True)
class Snapshot:
    """One version of a table and the data files it committed (full URIs)."""

    uri: str
    version: int
    files: list[str]


@dataclass(frozen=True)
class RunTables:
    output: str
    captions: Snapshot | None  # None when the folder has no captions table
    errors: Snapshot | None
    summary: dict | None
    notes: list[str] = field(default_factory=list)  # what the page should say about them


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _table_call(uri: str, what, *args):
    """A ``captioning.tables`` call whose failure (a table delta-rs cannot read, a bucket
    it cannot reach) is the user's to fix: one line, not a traceback."""
    from deltalake.exceptions import DeltaError

    try:
        return what(uri, *args)
    except (DeltaError, OSError) as error:
        raise UserError(f"cannot read table {uri}: {_first_line(error)}") from None


def _refuse_missing(output: str) -> None:
    """No table in ``output``: say why, in one line."""
    legacy = run_layout.legacy_patterns(output)
    if storage.glob(legacy["captions"]) or storage.glob(legacy["errors"]):
        raise UserError(
            f"{output} is a caption run in the layout before tables ({legacy['captions']}); "
            "the output layout changed: pass the --output DIR of a run made since (an "
            f"incremental run with --output {output} --skip-existing imports these captions)"
        )
    if _table_call(output, tables.exists):
        parent = output.rstrip("/").rsplit("/", 1)[0]
        raise UserError(
            f"{output} is one table of a run, not its output folder: pass --captions {parent}"
        )
    raise UserError(
        f"no caption run at {output}: it has no {run_layout.CAPTIONS_TABLE}/ or "
        f"{run_layout.ERRORS_TABLE}/ table (pass the --output DIR of `captioning caption`)"
    )


def _history(uri: str) -> list[dict]:
    """The table's commits, newest first (``tables`` has no history call yet)."""
    from deltalake import DeltaTable

    path = os.path.abspath(storage.local_path(uri)) if storage.is_local(uri) else uri
    return DeltaTable(path, storage_options=tables.storage_options(uri)).history()


def _commit_run_id(commit: dict) -> str | None:
    try:
        return json.loads(commit.get(COMMIT_METADATA_KEY) or "{}").get("run_id")
    except (TypeError, ValueError, AttributeError):
        return None


def _errors_version_for(errors_uri: str, captions_commit: dict) -> int | None:
    """The errors version that goes with a captions commit: the one its run committed
    (a run commits captions, then errors), else the last one before it (an import or an
    empty table's creation has no run)."""
    history = _table_call(errors_uri, _history)
    run_id = _commit_run_id(captions_commit)
    if run_id is not None:
        for commit in history:
            if _commit_run_id(commit) == run_id:
                return int(commit["version"])
    earlier = [c for c in history if c["timestamp"] <= captions_commit["timestamp"]]
    return max((int(c["version"]) for c in earlier), default=None)


def _read_summary(output: str) -> dict | None:
    path = run_layout.summary_path(output)
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_bytes(path))
    except ValueError as error:
        log.warning("ignoring %s: not JSON (%s)", path, error)
        return None


def _snapshot(uri: str, version: int) -> Snapshot:
    return Snapshot(uri, version, _table_call(uri, tables.committed_files, version))


def find_run_tables(output: str, version: int | None = None) -> RunTables:
    """The committed snapshots (latest, or as of captions ``version``) and the summary of
    the caption run whose ``--output`` was ``output``."""
    output = output.rstrip("/")
    captions_uri = run_layout.captions_table(output)
    errors_uri = run_layout.errors_table(output)
    has_captions = _table_call(captions_uri, tables.exists)
    has_errors = _table_call(errors_uri, tables.exists)
    if not has_captions and not has_errors:
        _refuse_missing(output)
    summary = _read_summary(output)
    if version is None:
        # Versions are fixed first, so a run committing meanwhile cannot mix two snapshots.
        captions = _table_call(captions_uri, tables.version) if has_captions else None
        errors = _table_call(errors_uri, tables.version) if has_errors else None
        return RunTables(
            output,
            _snapshot(captions_uri, captions) if captions is not None else None,
            _snapshot(errors_uri, errors) if errors is not None else None,
            summary,
        )
    if not has_captions:
        raise UserError(f"--version needs a captions table, and {output} has none")
    latest = _table_call(captions_uri, tables.version)
    if not 0 <= version <= latest:
        raise UserError(f"--version {version}: {captions_uri} has versions 0 to {latest}")
    commit = next(
        (c for c in _table_call(captions_uri, _history) if int(c["version"]) == version), None
    )
    if commit is None:  # its log entry is past the retention
        raise UserError(f"--version {version} of {captions_uri} is no longer kept")
    errors = _errors_version_for(errors_uri, commit) if has_errors else None
    notes = [f"captions table as of version {version} (latest: {latest})"]
    run_id = _commit_run_id(commit)
    # summary.json is the last run's; shown only when that run made this version.
    if summary is not None and version != latest and summary.get("run_id") != run_id:
        notes.append(
            f"summary.json is of run {summary.get('run_id')}, not of the run that "
            f"committed version {version} ({run_id or 'unknown'}); not shown"
        )
        summary = None
    return RunTables(
        output,
        _snapshot(captions_uri, version),
        _snapshot(errors_uri, errors) if errors is not None else None,
        summary,
        notes,
    )


def _shown_images(
    thumbnails: dict[str, Thumbnail], out_dir: str, mode: str
) -> dict[str, ShownImage]:
    shown = {}
    for uri, thumbnail in thumbnails.items():
        if thumbnail.jpeg is None:
            shown[uri] = ShownImage(None, problem=thumbnail.problem)
            continue
        if mode == EMBED:
            src = thumbnail.data_uri()
        else:
            # Named by URI so a rerun overwrites the same files instead of piling up new ones.
            src = f"thumbnails/{hashlib.sha1(uri.encode()).hexdigest()[:20]}.jpg"
            storage.write_bytes(f"{out_dir.rstrip('/')}/{src}", thumbnail.jpeg)
        shown[uri] = ShownImage(src, thumbnail.width, thumbnail.height)
    return shown


def build_report(
    output: str,
    out_dir: str,
    options: ReportOptions = ReportOptions(),
    evaluation: str | None = None,
    evaluation_images: str | None = None,
) -> str:
    """Write the report of the run whose ``--output`` was ``output`` into ``out_dir``;
    returns the HTML's path."""
    if options.thumbnails not in (EMBED, FILES):
        raise UserError(f"thumbnails must be {EMBED!r} or {FILES!r}, not {options.thumbnails!r}")
    if min(options.lowest, options.highest, options.random, options.max_errors, options.worst) < 0:
        raise UserError("sample sizes, --max-errors and --worst cannot be negative")
    run = find_run_tables(output, options.version)
    worst = read_worst(evaluation, options.worst, evaluation_images) if evaluation else None
    captions = None
    if run.captions is not None:
        captions = sample_captions(
            run.captions.files, options.lowest, options.highest, options.random, options.seed
        )
        log.info(
            "sampled %d of %d caption rows from %d file(s) of %s version %d",
            len(captions.rows),
            captions.total_rows,
            len(run.captions.files),
            run.captions.uri,
            run.captions.version,
        )
    errors = None
    if run.errors is not None:
        errors = collect_errors(run.errors.files, options.max_errors)
    uris = [row.image_uri for row in captions.rows] if captions else []
    uris += [row.image_uri for row in worst.rows] if worst else []
    thumbnails = make_thumbnails(uris, options.thumbnail_size)
    unreadable = sum(t.jpeg is None for t in thumbnails.values())
    if unreadable:
        log.warning("%d of %d images cannot be shown", unreadable, len(thumbnails))
    content = ReportContent(
        output=run.output,
        generated_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=run.summary,
        captions=captions,
        errors=errors,
        evaluation=worst,
        images=_shown_images(thumbnails, out_dir, options.thumbnails),
        sample_sizes=(options.lowest, options.highest, options.random),
        seed=options.seed,
        table_versions={
            name: snapshot.version
            for name, snapshot in (("captions", run.captions), ("errors", run.errors))
            if snapshot is not None
        },
        notes=run.notes,
    )
    path = f"{out_dir.rstrip('/')}/index.html"
    storage.write_bytes(path, render_report(content).encode("utf-8"))
    return path
