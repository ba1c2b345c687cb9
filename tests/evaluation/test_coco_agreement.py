"""Our evaluation path gives the COCO caption toolkit's own figures on the same captions.

The reference side calls pycocoevalcap exactly as its ``COCOEvalCap.evaluate`` does:
PTB-tokenise the references and the candidates (two Java runs), then Bleu(4), Meteor,
Rouge and Cider.
"""

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from captioning.evaluation import metrics
from captioning.evaluation.evaluate import evaluate_captions
from captioning.evaluation.per_image import PER_IMAGE_COLUMNS, REFERENCE_SEPARATOR
from tests.conftest import needs_java

pytestmark = needs_java("the COCO toolkit's PTB tokenizer and METEOR")

# Capitals, punctuation, contractions, brackets, hyphens, an empty candidate, a perfect
# one, and different numbers of references: everything tokenisation has to get right.
REFERENCES = {
    "img-1.jpg": [
        "A dog runs across the grassy field.",
        "A brown dog is running on grass!",
        "The dog, brown and white, sprints through a park.",
    ],
    "img-2.jpg": ["Two people ride bicycles down a city street.", "Cyclists on a busy road"],
    "img-3.jpg": [
        "A man's hat (red) lies on a wooden bench.",
        "a red hat on a bench",
        "There's a red-colored hat sitting on the bench; nobody is around.",
        "Red hat left on a park bench",
    ],
    "img-4.jpg": ["A plate of food with broccoli and rice.", "Rice and broccoli on a white plate"],
    "img-5.jpg": ["A small green star to the left of a large blue square"],
    "img-6.jpg": ["A cat sleeping on a sofa.", "A cat asleep on the couch."],
}
CANDIDATES = {
    "img-1.jpg": "A brown dog running on the grass.",
    "img-2.jpg": "two men riding bikes on a street",
    "img-3.jpg": "A red hat's on a bench (wooden).",
    "img-4.jpg": "a plate with rice, broccoli and meat",
    "img-5.jpg": "a small green star to the left of a large blue square",
    "img-6.jpg": "",
}


def _coco_toolkit_scores(references, candidates):
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in references})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor_scorer = Meteor()
    meteor, _ = meteor_scorer.compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_per_image = Cider().compute_score(gts, res)
    corpus = {
        "bleu1": bleu[0],
        "bleu2": bleu[1],
        "bleu3": bleu[2],
        "bleu4": bleu[3],
        "meteor": meteor,
        "rouge_l": rouge,
        "cider": cider,
    }
    return corpus, dict(zip(gts, cider_per_image, strict=True))


def test_evaluate_scores_equal_the_coco_toolkit_on_the_same_captions():
    expected, expected_cider = _coco_toolkit_scores(REFERENCES, CANDIDATES)
    got, rows = evaluate_captions(REFERENCES, CANDIDATES)

    assert got["tokenizer"] == "ptb" and got["count"] == len(CANDIDATES)
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
    # The set is hard enough that no figure is trivially 0 or 1.
    assert 0.05 < got["bleu4"] < 0.9 and 0.1 < got["cider"] < 5

    assert [tuple(row) for row in rows] == [PER_IMAGE_COLUMNS] * len(rows)
    assert {row["image"]: row["cider"] for row in rows} == pytest.approx(expected_cider, rel=1e-9)
    ciders = [row["cider"] for row in rows]
    assert ciders == sorted(ciders) and rows[0]["image"] == "img-6.jpg"  # empty caption: worst
    assert rows[-1]["image"] == "img-5.jpg"  # the exact match: best
    assert len(set(ciders)) == len(ciders)
    assert sum(ciders) / len(ciders) == pytest.approx(got["cider"], rel=1e-9)
    by_image = {row["image"]: row for row in rows}
    assert by_image["img-3.jpg"]["caption"] == CANDIDATES["img-3.jpg"]
    assert by_image["img-3.jpg"]["references"].split(REFERENCE_SEPARATOR) == REFERENCES["img-3.jpg"]


def test_without_java_captions_are_normalised_and_meteor_is_none(monkeypatch):
    ptb_references, _, _ = metrics.tokenize_captions(REFERENCES, CANDIDATES)
    monkeypatch.setattr(metrics, "_java_available", lambda: False)
    scores = metrics.score_captions(REFERENCES, CANDIDATES)
    assert scores.tokenizer == "simple" and scores.corpus["meteor"] is None
    assert scores.per_image_cider["img-5.jpg"] > 5  # still a real score, not a placeholder
    # The two tokenisers differ ("man's" is "man 's" to PTB, "man s" here), so the
    # agreement test above would notice a silent fall-back.
    simple_references, _, _ = metrics.tokenize_captions(REFERENCES, CANDIDATES)
    assert ptb_references["img-3.jpg"][0] == "a man 's hat -lrb- red -rrb- lies on a wooden bench"
    assert simple_references["img-3.jpg"][0] == "a man s hat red lies on a wooden bench"
