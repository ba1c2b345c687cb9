"""Dataset readers: Flickr8k (real shared files), COCO, Karpathy, CSV, and format inference."""

import json
from pathlib import Path

import pytest

from captioning.data.formats import infer_format, read_captions
from captioning.errors import UserError

FLICKR8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k"
TOKENS = FLICKR8K / "Flickr8k.token.txt"


@pytest.mark.skipif(not TOKENS.is_file(), reason="the shared Flickr8k files sit beside the repo")
def test_flickr8k_reads_the_real_files():
    data = read_captions(TOKENS)
    assert data.report.rows == 40_460
    assert len(data.images("train")) == 6000
    assert len(data.images("val")) == 1000
    assert len(data.images("test")) == 1000
    # The one malformed id is reported, not merged into its neighbour or dropped silently;
    # 91 images of the token file are in none of the three split files.
    assert data.report.bad_rows == {"malformed image id": 1, "image in no split file": 459}
    assert "2258277193_586949ec62.jpg.1#0" in data.report.examples["malformed image id"][0]
    assert not any(".jpg." in record.image for record in data.records)
    assert len(data.records) == 40_000
    assert "malformed image id" in data.report.summary()


def test_flickr8k_without_split_files_uses_a_seeded_split(tmp_path):
    (tmp_path / "tokens.txt").write_text(
        "".join(f"img{i}.jpg#0\tcaption number {i}\n" for i in range(50)) + "img1.jpg#1\t  \n"
    )
    data = read_captions(tmp_path / "tokens.txt", format="flickr8k", seed=3)
    assert data.report.bad_rows == {"empty caption": 1}
    assert len(data.images("val")) == 10 and len(data.images("train")) == 40
    again = read_captions(tmp_path / "tokens.txt", format="flickr8k", seed=3)
    assert data.images("val") == again.images("val")


def test_csv_reports_bad_rows_and_missing_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (images / name).write_bytes(b"x")
    (tmp_path / "captions.csv").write_text(
        "image,caption\na.png,A red circle.\nb.png,\nmissing.png,a dog\nc.png,a cat\n,no image\n"
    )
    data = read_captions(tmp_path / "captions.csv", images)
    assert data.report.rows == 5
    assert data.report.bad_rows == {"empty caption": 1, "missing image": 1, "no image name": 1}
    assert sorted(r.image for r in data.records) == ["a.png", "c.png"]


def test_csv_without_the_right_header_is_a_user_error(tmp_path):
    (tmp_path / "captions.csv").write_text("file,text\na.png,hello\n")
    with pytest.raises(UserError, match="'image' and 'caption'"):
        read_captions(tmp_path / "captions.csv")


def test_coco_captions(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
        "annotations": [
            {"image_id": 1, "caption": "a man"},
            {"image_id": 1, "caption": "a person"},
            {"image_id": 2, "caption": ""},
            {"image_id": 9, "caption": "orphan"},
            {"image_id": 2, "caption": "a dog"},
        ],
    }
    (tmp_path / "captions_train2017.json").write_text(json.dumps(data))
    assert infer_format(tmp_path / "captions_train2017.json") == "coco"
    result = read_captions(tmp_path / "captions_train2017.json")
    assert result.report.bad_rows == {"empty caption": 1, "unknown image id": 1}
    assert result.captions_by_image() == {"1.jpg": ["a man", "a person"], "2.jpg": ["a dog"]}


def test_karpathy_split_json(tmp_path):
    data = {
        "images": [
            {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A cat."}, {"raw": ""}]},
            {"filename": "b.jpg", "split": "restval", "sentences": [{"raw": "A dog."}]},
            {"filename": "c.jpg", "split": "val", "sentences": [{"raw": "A bird."}]},
            {"filename": "d.jpg", "split": "test", "sentences": [{"raw": "A fish."}]},
        ]
    }
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps(data))
    assert infer_format(tmp_path / "dataset_flickr8k.json") == "karpathy"
    result = read_captions(tmp_path / "dataset_flickr8k.json")
    assert result.images("train") == ["a.jpg", "b.jpg"]
    assert result.images("val") == ["c.jpg"] and result.images("test") == ["d.jpg"]
    assert result.report.bad_rows == {"empty caption": 1}


def test_unknown_format_and_missing_file_are_user_errors(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(UserError, match="--format"):
        read_captions(tmp_path / "x.json")
    with pytest.raises(UserError, match="does not exist"):
        read_captions(tmp_path / "nope.csv")
