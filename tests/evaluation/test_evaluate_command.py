"""``captioning evaluate --per-image``: the CSV the report reads, checked against the toolkit."""

import csv
import json

import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from captioning.cli.main import main
from captioning.evaluation.per_image import (
    PER_IMAGE_COLUMNS,
    REFERENCE_SEPARATOR,
    per_image_rows,
    write_per_image_csv,
)
from tests.conftest import needs_java


def _references(captions_csv):
    with open(captions_csv, newline="") as handle:
        references = {}
        for row in csv.DictReader(handle):
            references.setdefault(row["image"], []).append(row["caption"])
    return references


@needs_java("the COCO PTB tokenizer")
def test_per_image_csv_holds_every_scored_image_worst_first(tiny_bundle, scenes, tmp_path, capsys):
    out = tmp_path / "new" / "per_image.csv"
    code = main(
        [
            "evaluate",
            "--model",
            tiny_bundle,
            "--captions",
            str(scenes / "captions.csv"),
            "--images",
            str(scenes / "images"),
            "--limit",
            "8",
            "--json",
            "--per-image",
            str(out),
        ]
    )
    assert code == 0
    corpus = json.loads(capsys.readouterr().out)
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == PER_IMAGE_COLUMNS
    assert len(rows) == corpus["count"] == 8
    ciders = [float(row["cider"]) for row in rows]
    assert ciders == sorted(ciders)
    assert sum(ciders) / len(ciders) == pytest.approx(corpus["cider"], abs=1e-5)

    references = _references(scenes / "captions.csv")
    for row in rows:
        assert row["references"].split(REFERENCE_SEPARATOR) == references[row["image"]]
    # Each image's CIDEr is what the COCO toolkit gives for the caption the CSV shows.
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {r["image"]: [{"caption": c} for c in references[r["image"]]] for r in rows}
    )
    res = tokenizer.tokenize({r["image"]: [{"caption": r["caption"]}] for r in rows})
    _, expected = Cider().compute_score(gts, res)
    assert ciders == pytest.approx(
        [dict(zip(gts, expected, strict=True))[r["image"]] for r in rows], abs=1e-5
    )


def test_an_unwritable_per_image_path_fails_before_any_work(tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            "/no/bundle",
            "--captions",
            "/no.csv",
            "--images",
            str(tmp_path),
            "--per-image",
            str(tmp_path),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "is a directory" in error and len(error.splitlines()) == 1


def test_a_reference_holding_the_separator_stays_one_reference(tmp_path):
    rows = per_image_rows(
        {"a.png": ["left | right", "plain"], "b.png": ["x"]},
        {"a.png": "left right", "b.png": "y"},
        {"a.png": 2.0, "b.png": 0.5},
    )
    assert [row["image"] for row in rows] == ["b.png", "a.png"]
    assert rows[1]["references"].split(REFERENCE_SEPARATOR) == ["left right", "plain"]
    write_per_image_csv(rows, tmp_path / "rows.csv")
    with (tmp_path / "rows.csv").open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert read[1] == {
        "image": "a.png",
        "caption": "left right",
        "references": "left right | plain",
        "cider": "2.000000",
    }
