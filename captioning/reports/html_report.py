"""One self-contained HTML page for a caption run: inline CSS and JS, no network.

Every piece of text from the tables goes through ``html.escape``; the gallery's
sort and filter read ``data-`` attributes, so no data is ever placed in script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from captioning.reports.error_rows import ErrorSummary
from captioning.reports.evaluation_rows import EvaluationWorst
from captioning.reports.page_assets import SCRIPT, STYLE
from captioning.reports.sampling import ALL, HIGHEST, LOWEST, RANDOM, CaptionSample, SampledCaption

GROUP_LABELS = {LOWEST: "lowest-scoring", HIGHEST: "highest-scoring", RANDOM: "random"}


@dataclass(frozen=True)
class ShownImage:
    """How the page shows one image: ``src`` (data: URI or relative path) or a ``problem``."""

    src: str | None
    width: int = 0
    height: int = 0
    problem: str | None = None


@dataclass
class ReportContent:
    output: str  # the run's --output folder
    generated_at: str
    summary: dict | None  # DIR/summary.json, when it describes the tables shown
    captions: CaptionSample | None  # None when the run has no captions table
    errors: ErrorSummary | None  # None when the run has no errors table
    evaluation: EvaluationWorst | None
    images: dict[str, ShownImage]  # by image URI
    sample_sizes: tuple[int, int, int]  # lowest, highest, random
    seed: int
    table_versions: dict[str, int] = field(default_factory=dict)  # the versions read
    notes: list[str] = field(default_factory=list)  # e.g. an earlier version is shown


def _text(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _number(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri


def _image(uri: str, images: dict[str, ShownImage], css_class: str = "thumb") -> str:
    shown = images.get(uri) or ShownImage(None, problem="no thumbnail made")
    if shown.src is None:
        return (
            f'<div class="{css_class} missing" role="img" aria-label="image cannot be shown">'
            f"<strong>cannot show image</strong><small>{_text(shown.problem)}</small></div>"
        )
    return (
        f'<div class="{css_class}"><img src="{_text(shown.src)}" width="{shown.width}" '
        f'height="{shown.height}" alt="{_text(_name(uri))}"></div>'
    )


def _tile(label: str, value: str, bad: bool = False) -> str:
    return (
        f'<div class="tile{" bad" if bad else ""}"><span class="label">{_text(label)}</span>'
        f'<span class="value">{_text(value)}</span></div>'
    )


def _summary_section(content: ReportContent) -> str:
    summary = content.summary or {}
    captions, errors = content.captions, content.errors
    caption_rows = captions.total_rows if captions else 0
    error_rows = errors.total if errors else 0
    captioned = summary.get("captioned", caption_rows)
    failed = summary.get("errors", error_rows)
    inputs = summary.get("inputs", captioned + failed)
    wall = summary.get("wall_seconds")
    tiles = [
        _tile("Inputs", _number(inputs)),
        _tile("Captioned", _number(captioned)),
        _tile("Errors", _number(failed), bad=bool(failed)),
        _tile("Images / s", _number(summary.get("images_per_second"), 2)),
        _tile("Wall time", "n/a" if wall is None else f"{wall:,.1f} s"),
    ]
    model_ids = captions.model_ids if captions else {}
    versions = ", ".join(f"{name} {v}" for name, v in content.table_versions.items())
    facts = [
        ("Run id", summary.get("run_id", "n/a (no summary file)")),
        ("Model id", summary.get("model_id") or ", ".join(model_ids) or "n/a"),
        ("Output folder", content.output),
        ("Table versions", versions or "n/a"),
        ("Skipped (already captioned)", _number(summary.get("skipped_existing"))),
        (
            "Rows in captions table",
            f"{caption_rows:,} in {_count(len(captions.files) if captions else 0, 'file')}",
        ),
        (
            "Rows in errors table",
            f"{error_rows:,} in {_count(len(errors.files) if errors else 0, 'file')}",
        ),
    ]
    if summary.get("error_rate") is not None:
        limit = summary.get("max_error_rate")
        facts.append(
            (
                "Error rate (of listed inputs)",
                f"{summary['error_rate']:.2%}"
                + ("" if limit is None else f" (--max-error-rate {limit:.2%})"),
            )
        )
    if summary.get("captions_committed") is False:
        facts.append(("Captions committed", "no: the earlier captions were kept"))
    if len(model_ids) > 1:
        facts.append(
            ("Model ids in table", ", ".join(f"{m} ({n:,})" for m, n in model_ids.items()))
        )
    if captions and captions.score_mean is not None:
        facts.append(
            (
                "Score (mean token log-prob)",
                f"mean {captions.score_mean:.3f}, min {captions.score_min:.3f}, "
                f"max {captions.score_max:.3f}",
            )
        )
    facts.append(("Report generated", content.generated_at))
    fact_rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in facts)
    # An alert of the run (too many errors, nothing captioned) and notes on what is shown
    # come first: a reader must not take held-back or earlier captions for tonight's.
    alert = summary.get("alert")
    banners = (
        f'<p class="alert" role="alert"><strong>Alert:</strong> {_text(alert)}</p>' if alert else ""
    ) + "".join(f'<p class="note">Note: {_text(note)}.</p>' for note in content.notes)
    return (
        '<section id="summary"><h2>Run summary</h2>'
        f'{banners}<div class="tiles">{"".join(tiles)}</div>'
        f'<div class="columns"><table class="facts">{fact_rows}</table>'
        f"{_error_counts(content)}</div></section>"
    )


def _error_counts(content: ReportContent) -> str:
    if content.errors is not None:
        counts = content.errors.by_stage_and_type
    else:  # no errors table: fall back to the summary's counters
        by_stage = (content.summary or {}).get("errors_by_stage", {})
        counts = {(s, t): n for s, kinds in by_stage.items() for t, n in kinds.items()}
    if not counts:
        body = '<tr><td colspan="3" class="empty">no errors</td></tr>'
    else:
        body = "".join(
            f'<tr><td>{_text(stage)}</td><td>{_text(kind)}</td><td class="num">{n:,}</td></tr>'
            for (stage, kind), n in counts.items()
        )
    return (
        '<table id="error-counts"><caption class="note">Errors by stage and type</caption>'
        f'<tr><th>stage</th><th>error type</th><th class="num">count</th></tr>{body}</table>'
    )


def _hue(score: float, low: float, high: float) -> int:
    """Red (lowest in the sample) to green (highest), for the score badge."""
    if math.isnan(score) or high <= low:
        return 210
    return round(130 * (score - low) / (high - low))


def _card(row: SampledCaption, images: dict[str, ShownImage], low: float, high: float) -> str:
    unscored = math.isnan(row.score)
    score = "nan" if unscored else f"{row.score:.4f}"
    tags = "".join(
        f'<span class="tag">{_text(GROUP_LABELS[g])}</span>' for g in row.groups if g != ALL
    )
    alternatives = ""
    if row.alternatives:
        items = "".join(
            f"<li>{_text(caption)} <span class='mono'>{alt:.3f}</span></li>"
            for caption, alt in row.alternatives
        )
        alternatives = (
            f"<details><summary>{_count(len(row.alternatives), 'other beam')}</summary>"
            f"<ol>{items}</ol></details>"
        )
    size = f"{row.width}×{row.height}" if row.width and row.height else ""
    # exp(mean log-probability) is the geometric-mean probability of each word.
    per_word = "" if unscored else f"; about {math.exp(row.score):.0%} per word"
    return (
        f'<figure class="card" data-score="{score}" data-caption="{_text(row.caption)}" '
        f'data-name="{_text(_name(row.image_uri))}" data-groups="{" ".join(row.groups)}">'
        f"{_image(row.image_uri, images)}<figcaption>"
        f'<p class="caption">{_text(row.caption)}</p><p class="meta">'
        f'<span class="score" style="--hue: {_hue(row.score, low, high)}" '
        f'title="mean token log-probability{per_word}">'
        f"{'n/a' if unscored else f'{row.score:.3f}'}</span>"
        f"{tags}</p>"
        f'<p class="uri" title="{_text(row.image_uri)}">{_text(_name(row.image_uri))}'
        f"{' · ' + size if size else ''}</p>{alternatives}</figcaption></figure>"
    )


def _gallery_section(content: ReportContent) -> str:
    captions = content.captions
    if captions is None or not captions.rows:
        return (
            '<section id="gallery"><h2>Gallery</h2>'
            '<p class="empty">No captioned images in this run.</p></section>'
        )
    lowest, highest, random = content.sample_sizes
    if captions.complete:
        note = f"All {captions.total_rows:,} captions of the run."
    else:
        note = (
            f"{len(captions.rows):,} of {captions.total_rows:,} captions: the {lowest:,} "
            f"lowest-scoring, the {highest:,} highest-scoring and {random:,} at random "
            f"(seed {content.seed})."
        )
    scores = [row.score for row in captions.rows if not math.isnan(row.score)]
    low, high = (min(scores), max(scores)) if scores else (0.0, 0.0)
    groups = (
        ""
        if captions.complete
        else "".join(f'<option value="{g}">{label}</option>' for g, label in GROUP_LABELS.items())
    )
    controls = (
        '<div class="controls">'
        '<label>Filter captions <input id="filter" type="search" placeholder="words in caption" '
        'autocomplete="off"></label>'
        '<label>Sort <select id="sort">'
        '<option value="score-asc">score, lowest first</option>'
        '<option value="score-desc">score, highest first</option>'
        '<option value="name">file name</option></select></label>'
        f'<label{" hidden" if captions.complete else ""}>Show <select id="group">'
        f'<option value="">whole sample</option>{groups}</select></label>'
        f'<span id="shown">{len(captions.rows):,} of {len(captions.rows):,} shown</span></div>'
    )
    cards = "".join(_card(row, content.images, low, high) for row in captions.rows)
    return (
        f'<section id="gallery"><h2>Gallery</h2><p class="note">{_text(note)} Score is the '
        "caption's mean token log-probability (0 is certain).</p>"
        f'{controls}<div id="cards" class="cards">{cards}</div>'
        '<p id="no-match" class="empty" hidden>No caption matches the filter.</p></section>'
    )


def _evaluation_section(content: ReportContent) -> str:
    evaluation = content.evaluation
    if evaluation is None:
        return ""
    note = (
        f"The {len(evaluation.rows):,} lowest per-image CIDEr scores of "
        f"{evaluation.total:,} evaluated images (mean CIDEr {_number(evaluation.mean_cider, 3)}), "
        f"from {evaluation.path}."
    )
    rows = "".join(
        f"<tr><td>{_image(row.image_uri, content.images, 'thumb small')}</td>"
        f'<td class="mono file" title="{_text(row.image_uri)}">{_text(row.image)}</td>'
        f"<td>{_text(row.caption)}</td>"
        f'<td><ul class="refs">{"".join(f"<li>{_text(r)}</li>" for r in row.references)}</ul></td>'
        f'<td class="num">{row.cider:.3f}</td></tr>'
        for row in evaluation.rows
    )
    if not rows:
        rows = '<tr><td colspan="5" class="empty">no evaluated images</td></tr>'
    return (
        f'<section id="evaluation"><h2>Worst images by CIDEr</h2><p class="note">{_text(note)}</p>'
        "<table><tr><th>image</th><th>file</th><th>generated caption</th><th>references</th>"
        f'<th class="num">CIDEr</th></tr>{rows}</table></section>'
    )


def _error_rows_section(content: ReportContent) -> str:
    errors = content.errors
    if errors is None:
        return (
            '<section id="error-rows"><h2>Errors</h2>'
            '<p class="empty">The run folder has no errors table.</p></section>'
        )
    if not errors.total:
        return (
            '<section id="error-rows"><h2>Errors</h2>'
            '<p class="empty">No errors table rows: every input was captioned.</p></section>'
        )
    note = _count(errors.total, "error row")
    if errors.truncated:
        note += f"; the first {len(errors.rows):,} are listed"
    rows = "".join(
        f'<tr><td class="mono" title="{_text(row["image_uri"])}">{_text(row["image_uri"])}</td>'
        f"<td>{_text(row['stage'])}</td><td>{_text(row['error_type'])}</td>"
        f"<td>{_text(row['message'])}</td>"
        f'<td class="mono">{_text(_timestamp(row.get("failed_at")))}</td></tr>'
        for row in errors.rows
    )
    return (
        f'<section id="error-rows"><h2>Errors</h2><p class="note">{_text(note)}.</p>'
        "<table><tr><th>image</th><th>stage</th><th>error type</th><th>message</th>"
        f"<th>failed at</th></tr>{rows}</table></section>"
    )


def _timestamp(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(value, "strftime") else str(value)


def render_report(content: ReportContent) -> str:
    """The whole page as one string."""
    title = f"Caption report: {_name(content.output)}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>Caption run report</h1><p>{_text(content.output)}</p></header><main>"
        f"{_summary_section(content)}{_gallery_section(content)}"
        f"{_evaluation_section(content)}{_error_rows_section(content)}"
        f"</main><script>{SCRIPT}</script></body></html>\n"
    )
