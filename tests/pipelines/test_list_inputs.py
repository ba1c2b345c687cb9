"""ListInputs on a real TestPipeline: globs, manifests of every kind, and the inputs
that name nothing readable, each as exactly one URI or one error row."""

from __future__ import annotations

import glob
import gzip
import json
import os
import tempfile
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from captioning.errors import UserError
from pipelines.list_inputs import ListInputs


def _listed(patterns, manifest=None, **kwargs) -> dict[str, list]:
    """Run ListInputs and return what each output held (errors as (uri, type, message)),
    read back from files the pipeline wrote."""
    with tempfile.TemporaryDirectory() as folder:
        with TestPipeline() as pipeline:
            listed = pipeline | ListInputs(patterns, manifest, **kwargs)
            for name in ("uris", "shards", "errors"):
                _ = (
                    listed[name]
                    | f"Json{name}" >> beam.Map(_as_json)
                    | f"Write{name}" >> beam.io.WriteToText(os.path.join(folder, name))
                )
        found = {}
        for name in ("uris", "shards", "errors"):
            lines = []
            for path in glob.glob(os.path.join(folder, name + "*")):
                lines += Path(path).read_text().splitlines()
            found[name] = sorted(_from_json(line) for line in lines)
        return found


def _as_json(element) -> str:
    if isinstance(element, dict):  # an error row
        element = [element["image_uri"], element["error_type"], element["message"]]
    return json.dumps(element)


def _from_json(line: str):
    value = json.loads(line)
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("validate", [True, False], ids=["checked-when-built", "offline-build"])
def test_manifests_in_text_csv_tsv_jsonl_and_parquet(tmp_path, validate):
    (tmp_path / "m.txt").write_text("a.jpg\n# a comment\n\nb.jpg\na.jpg\n")
    (tmp_path / "m.csv").write_text('id,image_uri\n1,c.jpg\n2,"d,1.jpg"\n')
    (tmp_path / "m.tsv").write_text("path\tid\ne.jpg\t1\n")
    (tmp_path / "m.jsonl").write_text('{"path": "f.jpg"}\n{"path": "g.jpg", "x": 1}\n')
    with gzip.open(tmp_path / "m.csv.gz", "wt") as handle:
        handle.write("image_uri\nh.jpg\n")
    pq.write_table(pa.table({"image_uri": ["i.jpg", "j.jpg"], "x": [1, 2]}), tmp_path / "m.parquet")
    base = str(tmp_path / "here")
    for manifest, column, expected in (
        ("m.txt", "image_uri", ["a.jpg", "b.jpg"]),
        ("m.csv", "image_uri", ["c.jpg", "d,1.jpg"]),
        ("m.tsv", "path", ["e.jpg"]),
        ("m.jsonl", "path", ["f.jpg", "g.jpg"]),
        ("m.csv.gz", "image_uri", ["h.jpg"]),
        ("m.parquet", "image_uri", ["i.jpg", "j.jpg"]),
    ):
        # Built without looking at the manifest (a dry run's way), the CSV column is
        # found on a worker instead; the URIs are the same.
        listed = _listed(
            [], str(tmp_path / manifest), validate=validate, uri_column=column, base=base
        )
        # Relative paths are made absolute against the launcher's folder.
        assert listed["uris"] == [os.path.join(base, name) for name in expected], manifest
        assert listed["errors"] == [], manifest


def test_every_bad_manifest_line_is_one_error_row_and_blank_lines_are_skipped(tmp_path):
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text("id,image_uri\n1,/a.jpg\n\n2\n3,\n4,/b.jpg\n")
    listed = _listed([], str(csv_manifest))
    assert listed["uris"] == ["/a.jpg", "/b.jpg"]
    assert [(uri, kind) for uri, kind, _ in listed["errors"]] == [
        (str(csv_manifest), "BadManifestLine")
    ] * 2
    assert any("1 field(s)" in message for _, _, message in listed["errors"])

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"image_uri": "/c.jpg"}\nnot json\n[1]\n{"image_uri": null}\n')
    listed = _listed([], str(jsonl))
    assert listed["uris"] == ["/c.jpg"]
    assert len(listed["errors"]) == 3

    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_uri": ["/d.jpg", None, ""]}), parquet)
    listed = _listed([], str(parquet))
    assert listed["uris"] == ["/d.jpg"]
    assert sorted(message for _, _, message in listed["errors"]) == [
        "a row whose 'image_uri' is ''",
        "a row whose 'image_uri' is null",
    ]


def test_a_manifest_without_the_uri_column_is_refused_in_one_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,path\n1,a.jpg\n")
    with pytest.raises(UserError, match=r"no .image_uri. column .* --uri-column"):
        _listed([], str(manifest))


def test_uris_are_spelt_one_way_and_unreadable_schemes_are_rows(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    manifest = tmp_path / "m.txt"
    manifest.write_text(
        f"a.jpg\n./a.jpg\n{image}\nfile://{image}\ns3://bucket/b.jpg\n"
        "https://example.com/c.jpg\ngs://bucket/d.jpg\nshards/000.tar\n"
    )
    listed = _listed([str(tmp_path / "*.jpg")], str(manifest), base=str(tmp_path))
    assert listed["uris"] == sorted([str(image), "gs://bucket/d.jpg", "https://example.com/c.jpg"])
    assert listed["shards"] == [str(tmp_path / "shards" / "000.tar")]
    [(uri, kind, message)] = listed["errors"]
    assert (uri, kind) == ("s3://bucket/b.jpg", "UnsupportedScheme")
    assert "s3:// is not supported" in message


def test_a_folder_a_glob_matches_is_a_row_but_folders_under_double_star_are_not(tmp_path):
    (tmp_path / "holiday.jpg").mkdir()
    (tmp_path / "holiday.jpg" / "inside.jpg").write_bytes(b"x")
    (tmp_path / "photo.jpg").write_bytes(b"x")
    listed = _listed([str(tmp_path / "*.jpg")])
    assert listed["uris"] == [str(tmp_path / "photo.jpg")]
    assert [(uri, kind) for uri, kind, _ in listed["errors"]] == [
        (str(tmp_path / "holiday.jpg"), "IsAFolder")
    ]
    listed = _listed([str(tmp_path / "**")])
    assert listed["uris"] == [
        str(tmp_path / "holiday.jpg" / "inside.jpg"),
        str(tmp_path / "photo.jpg"),
    ]
    assert listed["errors"] == []


def test_brace_ranges_list_webdataset_shards_apart(tmp_path):
    for index in range(3):
        (tmp_path / f"shard-{index:03d}.tar").write_bytes(b"")
    listed = _listed([str(tmp_path / "shard-{000..002}.tar"), str(tmp_path / "shard-*.tar")])
    assert listed["shards"] == [str(tmp_path / f"shard-{index:03d}.tar") for index in range(3)]
    assert listed["uris"] == []
