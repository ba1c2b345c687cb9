"""Caption metrics through pycocoevalcap, on the real Flickr8k captions."""

from pathlib import Path

import pytest

from captioning.data.formats import read_captions
from captioning.evaluation.metrics import caption_metrics, exact_match_rate
from tests.conftest import needs_java

TOKENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "Flickr8k.token.txt"


def test_perfect_captions_score_one_and_wrong_ones_score_low():
    references = {"1": ["a red circle above a blue square"], "2": ["a small green star"]}
    perfect = caption_metrics(
        references, {"1": "A red circle above a blue square.", "2": "a small green star"}
    )
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["cider"] > 1.0 and perfect["count"] == 2
    wrong = caption_metrics(references, {"1": "a dog runs", "2": "people on a train"})
    assert wrong["bleu4"] < 0.01 and wrong["rouge_l"] < 0.3
    assert exact_match_rate(references, {"1": "a red circle above a blue square", "2": "x"}) == 0.5


@needs_java("METEOR")
def test_meteor_is_reported_where_java_exists():
    references = {"1": ["a red circle above a blue square"]}
    metrics = caption_metrics(references, {"1": "a red circle above a blue square"})
    assert metrics["meteor"] > 0.9


@pytest.mark.skipif(not TOKENS.is_file(), reason="the shared Flickr8k files sit beside the repo")
def test_leave_one_out_human_agreement_on_flickr8k():
    """One human caption scored against the other four: the known human ceiling."""
    data = read_captions(TOKENS)
    test = data.captions_by_image("test")
    references = {image: captions[1:] for image, captions in test.items() if len(captions) == 5}
    hypotheses = {image: test[image][0] for image in references}
    metrics = caption_metrics(references, hypotheses)
    assert len(references) > 990
    assert 0.1 < metrics["bleu4"] < 0.35
    assert 0.3 < metrics["cider"] < 1.2
