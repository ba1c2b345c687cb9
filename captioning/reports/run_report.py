"""``build_report``: a caption run's tables -> DIR/index.html (and thumbnails, if not embedded).

The table names mirror ``pipelines/write_outputs.py`` (this package cannot import
Beam code): captions in ``PREFIX-<run>-*.parquet``, errors in
``PREFIX_errors-<run>-*.parquet``, the run summary in ``PREFIX_summary.json``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from dataclasses import dataclass

from captioning.errors import UserError
from captioning.reports import storage
from captioning.reports.error_rows import collect_errors
from captioning.reports.evaluation_rows import read_worst
from captioning.reports.html_report import ReportContent, ShownImage, render_report
from captioning.reports.sampling import sample_captions
from captioning.reports.thumbnails import Thumbnail, make_thumbnails

log = logging.getLogger("captioning.report")

EMBED, FILES = "embed", "files"


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


@dataclass(frozen=True)
class RunTables:
    captions: list[str]
    errors: list[str]
    summary: dict | None


def find_run_tables(prefix: str) -> RunTables:
    # "PREFIX-*" cannot match "PREFIX_errors-*": the character after PREFIX differs.
    captions = storage.glob(f"{prefix}-*.parquet")
    errors = storage.glob(f"{prefix}_errors-*.parquet")
    if not captions and not errors:
        raise UserError(
            f"no caption run at {prefix}: neither {prefix}-*.parquet nor "
            f"{prefix}_errors-*.parquet exists (pass the --output PREFIX of `captioning caption`)"
        )
    summary_path = f"{prefix}_summary.json"
    summary = None
    if storage.exists(summary_path):
        try:
            summary = json.loads(storage.read_bytes(summary_path))
        except ValueError as error:
            log.warning("ignoring %s: not JSON (%s)", summary_path, error)
    return RunTables(captions, errors, summary)


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
    prefix: str,
    out_dir: str,
    options: ReportOptions = ReportOptions(),
    evaluation: str | None = None,
    evaluation_images: str | None = None,
) -> str:
    """Write the report of the run at ``prefix`` into ``out_dir``; returns the HTML's path."""
    if options.thumbnails not in (EMBED, FILES):
        raise UserError(f"thumbnails must be {EMBED!r} or {FILES!r}, not {options.thumbnails!r}")
    if min(options.lowest, options.highest, options.random, options.max_errors, options.worst) < 0:
        raise UserError("sample sizes, --max-errors and --worst cannot be negative")
    tables = find_run_tables(prefix)
    worst = read_worst(evaluation, options.worst, evaluation_images) if evaluation else None
    captions = None
    if tables.captions:
        captions = sample_captions(
            tables.captions, options.lowest, options.highest, options.random, options.seed
        )
        log.info(
            "sampled %d of %d caption rows from %d file(s)",
            len(captions.rows),
            captions.total_rows,
            len(tables.captions),
        )
    errors = collect_errors(tables.errors, options.max_errors) if tables.errors else None
    uris = [row.image_uri for row in captions.rows] if captions else []
    uris += [row.image_uri for row in worst.rows] if worst else []
    thumbnails = make_thumbnails(uris, options.thumbnail_size)
    unreadable = sum(t.jpeg is None for t in thumbnails.values())
    if unreadable:
        log.warning("%d of %d images cannot be shown", unreadable, len(thumbnails))
    content = ReportContent(
        prefix=prefix,
        generated_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=tables.summary,
        captions=captions,
        errors=errors,
        evaluation=worst,
        images=_shown_images(thumbnails, out_dir, options.thumbnails),
        sample_sizes=(options.lowest, options.highest, options.random),
        seed=options.seed,
    )
    path = f"{out_dir.rstrip('/')}/index.html"
    storage.write_bytes(path, render_report(content).encode("utf-8"))
    return path
