"""Standard caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Captions go through the COCO toolkit's own PTB tokenizer (Stanford CoreNLP, Java)
and its scorers, so the figures are comparable with published COCO-toolkit numbers.
Where there is no Java, captions fall back to the vocabulary's normalisation
(lower case, no punctuation) and METEOR is reported as None; ``tokenizer`` in the
result says which path ran.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioning.text.vocabulary import normalize_caption

log = logging.getLogger(__name__)

PTB = "ptb"
SIMPLE = "simple"


@dataclass(frozen=True)
class CaptionScores:
    """Corpus figures (``bleu1..4 meteor rouge_l cider count``), each image's CIDEr,
    and the tokenizer that prepared the captions (``ptb`` or ``simple``)."""

    corpus: dict[str, float | int | None]
    per_image_cider: dict[str, float]
    tokenizer: str


def _java_available() -> bool:
    return shutil.which("java") is not None


def tokenize_captions(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> tuple[dict[str, list[str]], dict[str, list[str]], str]:
    """Both sides tokenised as the scorers expect: id -> list of space-joined captions."""
    ids = sorted(hypotheses)
    if _java_available():
        try:
            return (*_ptb_tokenized(references, hypotheses, ids), PTB)
        except (OSError, KeyError) as error:
            # e.g. a read-only site-packages, where the toolkit writes its temporary file.
            log.warning("PTB tokenizer failed (%s); using the simple tokenizer", error)
    else:
        log.warning("no Java: captions normalised without the PTB tokenizer, METEOR skipped")
    refs = {i: [" ".join(normalize_caption(r)) for r in references[i]] for i in ids}
    hyps = {i: [" ".join(normalize_caption(hypotheses[i]))] for i in ids}
    return refs, hyps, SIMPLE


def _ptb_tokenized(references, hypotheses, ids):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # One Java run for both sides: -preserveLines tokenises every line on its own, so
    # this is what the toolkit's two separate runs give, at half the start-up cost.
    # Keys are tagged so an image's references and its hypothesis stay apart.
    combined = {("ref", i): [{"caption": r} for r in references[i]] for i in ids}
    combined.update({("hyp", i): [{"caption": hypotheses[i]}] for i in ids})
    tokenized = PTBTokenizer().tokenize(combined)
    refs = {i: tokenized[("ref", i)] for i in ids}
    hyps = {i: tokenized[("hyp", i)] for i in ids}
    return refs, hyps


def _meteor(references: dict, hypotheses: dict) -> float | None:
    if not _java_available():
        return None
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            score, _ = scorer.compute_score(references, hypotheses)
        finally:
            # pycocoevalcap leaves the Java process running otherwise.
            with scorer.lock:
                scorer.meteor_p.stdin.close()
                scorer.meteor_p.kill()
                scorer.meteor_p.wait()
        return float(score)
    except (OSError, ValueError, RuntimeError) as error:
        log.warning("METEOR unavailable: %s", error)
        return None


def score_captions(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> CaptionScores:
    """Score ``hypotheses`` (id -> caption) against ``references`` (id -> captions)."""
    ids = sorted(hypotheses)
    if not ids:
        raise ValueError("no captions to score")
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"no references for {len(missing)} captions, e.g. {missing[0]!r}")
    refs, hyps, tokenizer = tokenize_captions(references, hypotheses)
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    rouge, _ = Rouge().compute_score(refs, hyps)
    cider, cider_by_image = Cider().compute_score(refs, hyps)
    corpus = {
        "bleu1": float(bleu[0]),
        "bleu2": float(bleu[1]),
        "bleu3": float(bleu[2]),
        "bleu4": float(bleu[3]),
        "meteor": _meteor(refs, hyps),
        "rouge_l": float(rouge),
        "cider": float(cider),
        "count": len(ids),
    }
    # Cider returns per-image scores in the order of its input's keys.
    per_image = {i: float(s) for i, s in zip(refs, cider_by_image, strict=True)}
    return CaptionScores(corpus, per_image, tokenizer)


def caption_metrics(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> dict[str, float | int | None]:
    """Corpus-level metrics for ``hypotheses`` (id -> caption) against ``references``."""
    return score_captions(references, hypotheses).corpus


def exact_match_rate(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> float:
    """Share of hypotheses equal (after normalisation) to one of their references."""

    def tokens(text: str) -> tuple[str, ...]:
        return tuple(normalize_caption(text))

    hits = sum(tokens(hypotheses[i]) in {tokens(r) for r in references[i]} for i in hypotheses)
    return hits / max(len(hypotheses), 1)
