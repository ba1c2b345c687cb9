"""WebDataset shards through the real caption job: shards written by the ``webdataset``
package, one with a corrupt member and one cut short, read from local disk and from the
GCS emulator with a brace range. Every image member ends in exactly one table, keyed
``SHARD.tar/KEY.EXT``; a truncated shard costs one row per member it could not read
plus one for the shard."""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds

from captioning import run_layout, tables
from pipelines.caption_pipeline import run
from tests.conftest import GCS_BUCKET

PER_SHARD = 6


def _write_shards(scenes: Path, folder: Path) -> dict[str, object]:
    """Three shards of scene PNGs with captions; shard 1 has a corrupt member, shard 2 is
    cut in the middle of its fourth image. Returns what each member must end as."""
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted((scenes / "images").glob("*.png"))
    expected: dict[str, object] = {}
    for shard in range(3):
        path = folder / f"shard-{shard:03d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for index in range(PER_SHARD):
                image = images[shard * PER_SHARD + index]
                key = f"{shard:03d}{index:03d}"
                data = image.read_bytes()
                if shard == 1 and index == 2:
                    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 50  # a corrupt member
                writer.write({"__key__": key, "png": data, "txt": "a caption"})
                uri = f"{path}/{key}.png"
                expected[uri] = "decode" if shard == 1 and index == 2 else "caption"
    # Cut shard 2 in the middle of its fourth image's data.
    cut = folder / "shard-002.tar"
    with tarfile.open(cut) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".png")]
    fourth = members[3]
    cut.write_bytes(cut.read_bytes()[: fourth.offset_data + fourth.size // 2])
    for index, member in enumerate(members):
        uri = f"{cut}/{member.name}"
        expected[uri] = "caption" if index < 3 else ("TruncatedShard" if index == 3 else None)
    expected[str(cut)] = "TruncatedShard"
    return {uri: fate for uri, fate in expected.items() if fate is not None}


def _run(pattern: str, output: Path, bundle: str, *extra: str) -> dict:
    return run(
        [
            "--input",
            pattern,
            "--output",
            str(output),
            "--model",
            bundle,
            "--max-error-rate",
            "1",
            *extra,
        ]
    )


def _check(output: Path, expected: dict[str, object], prefix_from: str, prefix_to: str):
    captions = tables.read(run_layout.captions_table(str(output))).to_pylist()
    errors = tables.read(run_layout.errors_table(str(output))).to_pylist()
    seen = Counter(row["image_uri"] for row in captions + errors)
    assert max(seen.values()) == 1
    expected = {uri.replace(prefix_from, prefix_to): fate for uri, fate in expected.items()}
    assert set(seen) == set(expected)
    for row in captions:
        assert expected[row["image_uri"]] == "caption", row
    for row in errors:
        fate = expected[row["image_uri"]]
        assert fate in (row["stage"], row["error_type"]), row
    return captions, errors


@pytest.fixture(scope="module")
def shards(scenes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("webdataset")
    return folder, _write_shards(scenes, folder)


def test_local_shards_with_a_corrupt_member_and_a_truncated_shard(shards, tiny_bundle, tmp_path):
    folder, expected = shards
    fifo = tmp_path / "fifo.tar"  # a FIFO named like a shard must not hang the job
    os.mkfifo(fifo)
    summary = _run(
        str(folder / "shard-{000..002}.tar"), tmp_path / "out", tiny_bundle, "--input", str(fifo)
    )
    captions, errors = _check(tmp_path / "out", {**expected, str(fifo): "NotAFile"}, "", "")
    assert summary["captioned"] == len(captions) == 2 * PER_SHARD - 1 + 3
    # The corrupt member, the cut member, the cut shard, and the FIFO.
    assert summary["errors"] == len(errors) == 4

    # A nightly rerun reads the shards again but captions no member twice.
    rerun = _run(str(folder / "shard-*.tar"), tmp_path / "out", tiny_bundle, "--skip-existing")
    assert rerun["captioned"] == 0 and rerun["skipped_existing"] == len(captions)


def test_shards_in_a_bucket(gcs, shards, tiny_bundle, tmp_path):
    folder, expected = shards
    for path in sorted(folder.glob("*.tar")):
        gcs.blob(f"webdataset/{path.name}").upload_from_filename(str(path))
    gs_folder = f"gs://{GCS_BUCKET}/webdataset"
    _run(
        f"{gs_folder}/shard-{{000..002}}.tar",
        tmp_path / "out",
        tiny_bundle,
        "--project",
        "test-project",
    )
    _check(tmp_path / "out", expected, str(folder), gs_folder)
