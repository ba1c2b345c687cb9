"""Standard caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Captions are normalised with the vocabulary's own rule (lower case, no
punctuation) instead of the PTB tokenizer, which would need Java even for BLEU.
METEOR needs Java; where there is none it is reported as None.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioning.text.vocabulary import normalize_caption

log = logging.getLogger(__name__)


def _tokenized(text: str) -> str:
    return " ".join(normalize_caption(text))


def _meteor(references: dict, hypotheses: dict) -> float | None:
    if shutil.which("java") is None:
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


def caption_metrics(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> dict[str, float | int | None]:
    """Corpus-level metrics for ``hypotheses`` (id -> caption) against ``references``."""
    ids = sorted(hypotheses)
    if not ids:
        raise ValueError("no captions to score")
    refs = {i: [_tokenized(r) for r in references[i]] for i in ids}
    hyps = {i: [_tokenized(hypotheses[i]) or "<empty>"] for i in ids}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    rouge, _ = Rouge().compute_score(refs, hyps)
    cider, _ = Cider().compute_score(refs, hyps)
    return {
        "bleu1": float(bleu[0]),
        "bleu2": float(bleu[1]),
        "bleu3": float(bleu[2]),
        "bleu4": float(bleu[3]),
        "meteor": _meteor(refs, hyps),
        "rouge_l": float(rouge),
        "cider": float(cider),
        "count": len(ids),
    }


def exact_match_rate(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> float:
    """Share of hypotheses equal (after normalisation) to one of their references."""
    hits = sum(
        _tokenized(hypotheses[i]) in {_tokenized(r) for r in references[i]} for i in hypotheses
    )
    return hits / max(len(hypotheses), 1)
