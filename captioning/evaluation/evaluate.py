"""Scoring a bundle on a captioned image set."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from captioning.bundle import load_bundle
from captioning.data.formats import read_captions
from captioning.errors import UserError
from captioning.evaluation.metrics import exact_match_rate, score_captions
from captioning.evaluation.per_image import per_image_rows
from captioning.inference import caption_files

log = logging.getLogger("captioning.evaluate")


def evaluate_bundle(
    model: str,
    captions: str,
    images: str,
    format: str | None = None,
    split: str = "auto",
    beam_width: int | None = None,
    batch_size: int = 32,
    precision: str | None = None,
    limit: int | None = None,
    keep_hypotheses: bool = False,
    per_image: bool = False,
) -> dict:
    """Metrics plus ``exact_match`` (share of captions equal to a reference); with
    ``keep_hypotheses`` also the generated captions by image, with ``per_image`` also
    the rows of ``per_image_rows`` (worst CIDEr first). Images that cannot be
    captioned are counted in ``failed`` and left out of every score."""
    data = read_captions(captions, images, format)
    log.info(data.report.summary())
    if split == "auto":
        split = "test" if data.split("test") else "all"
    references = data.captions_by_image(None if split == "all" else split)
    if not references:
        raise UserError(f"no images in split {split!r} of {captions}")
    names = list(references)[:limit] if limit else list(references)
    bundle = load_bundle(model, precision=precision)
    hypotheses: dict[str, str] = {}
    failed = 0
    for index, result in enumerate(
        caption_files(bundle, [str(Path(images) / n) for n in names], batch_size, beam_width)
    ):
        if result.error:
            failed += 1
            log.warning("cannot caption %s: %s", names[index], result.error)
            continue
        hypotheses[names[index]] = result.caption
        if (index + 1) % 500 == 0:
            log.info("captioned %d/%d images", index + 1, len(names))
    if not hypotheses:
        raise UserError("no image could be captioned")
    metrics, rows = evaluate_captions(references, hypotheses)
    metrics["failed"] = failed
    metrics["model_id"] = bundle.model_id
    metrics["precision"] = bundle.precision
    if keep_hypotheses:
        metrics["hypotheses"] = hypotheses
    if per_image:
        metrics["per_image"] = rows
    return metrics


def evaluate_captions(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> tuple[dict, list[dict]]:
    """The scoring half of ``evaluate_bundle``: corpus metrics (plus ``exact_match`` and
    ``tokenizer``) and the per-image rows, for captions already generated."""
    scores = score_captions(references, hypotheses)
    metrics = dict(scores.corpus)
    metrics["exact_match"] = exact_match_rate(references, hypotheses)
    metrics["tokenizer"] = scores.tokenizer
    return metrics, per_image_rows(references, hypotheses, scores.per_image_cider)
