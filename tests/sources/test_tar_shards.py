"""read_shard on shards written by the ``webdataset`` package itself: whole, with a
corrupt or over-size member, cut short anywhere, garbage, empty, compressed, and read
from a GCS emulator through ``captioning.storage``; plus shard names and brace patterns."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from captioning import storage
from captioning.sources import tar_shards
from captioning.sources.tar_shards import (
    ShardError,
    ShardMember,
    expand_braces,
    image_extension,
    is_shard,
    read_shard,
)

SHARD = "gs://bucket/shards/00007.tar"
LIMIT = 1 << 20


def _image(index: int, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32 + index, 24), (index * 40 % 256, 90, 200)).save(out, fmt)
    return out.getvalue()


def _samples(count: int = 4) -> list[dict]:
    """WebDataset samples as img2dataset writes them: an image, a caption and metadata;
    every other sample's image is a PNG, and keys sit in a subfolder."""
    samples = []
    for index in range(count):
        ext, fmt = ("jpg", "JPEG") if index % 2 == 0 else ("png", "PNG")
        samples.append(
            {
                "__key__": f"part/{index:06d}",
                ext: _image(index, fmt),
                "txt": f"caption {index}",
                "json": b'{"width": 32}',
            }
        )
    return samples


def _expected(samples: list[dict], shard: str = SHARD) -> dict[str, bytes]:
    """uri -> bytes of every image member, in tar order."""
    images = {}
    for sample in samples:
        for ext in ("jpg", "png"):
            if ext in sample:
                images[f"{shard}/{sample['__key__']}.{ext}"] = sample[ext]
    return images


def _tar_bytes(samples: list[dict], compress: bool = False) -> bytes:
    out = io.BytesIO()
    with wds.TarWriter(out, compress=compress) as writer:
        for sample in samples:
            writer.write(sample)
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    """A stream that can only be read forward, like an HTTP body, in short reads."""

    def __init__(self, data: bytes, fail_after: int | None = None):
        self._data = memoryview(data)
        self._pos = 0
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("seek")

    def tell(self):
        raise io.UnsupportedOperation("tell")

    def readinto(self, buffer) -> int:
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ConnectionResetError("connection reset by peer")
        count = min(len(buffer), len(self._data) - self._pos, 3000)
        buffer[:count] = self._data[self._pos : self._pos + count]
        self._pos += count
        return count


def _read(data: bytes, limit: int = LIMIT, shard: str = SHARD) -> list:
    return list(read_shard(io.BufferedReader(_Unseekable(data)), shard, limit))


def _members(rows: list) -> dict[str, bytes]:
    return {row.uri: row.data for row in rows if isinstance(row, ShardMember)}


def _errors(rows: list) -> list[tuple[str, str]]:
    return [(row.uri, row.error_type) for row in rows if isinstance(row, ShardError)]


def _layout(data: bytes) -> list[tarfile.TarInfo]:
    """Where each member's header and data lie in an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


# --- whole shards -------------------------------------------------------------------


def test_whole_shard_yields_every_image_member_and_nothing_else():
    samples = _samples()
    rows = _read(_tar_bytes(samples))
    expected = _expected(samples)
    assert all(isinstance(row, ShardMember) for row in rows)
    assert [row.uri for row in rows] == list(expected)  # tar order, no .txt/.json
    assert _members(rows) == expected
    assert rows[0].uri == "gs://bucket/shards/00007.tar/part/000000.jpg"


def test_shard_writer_shards_and_a_brace_pattern_cover_every_sample(tmp_path):
    samples = _samples(7)
    with wds.ShardWriter(str(tmp_path / "shard-%06d.tar"), maxcount=3, verbose=0) as writer:
        for sample in samples:
            writer.write(sample)
    names = expand_braces(str(tmp_path / "shard-{000000..000002}.tar"))
    assert [Path(name).name for name in names] == [f"shard-00000{i}.tar" for i in range(3)]
    assert all(is_shard(name) for name in names)
    found: dict[str, bytes] = {}
    for name in names:
        with open(name, "rb") as stream:
            found.update(_members(list(read_shard(stream, name, LIMIT))))
    assert sorted(found.values()) == sorted(_expected(samples).values())
    assert f"{names[2]}/part/000006.jpg" in found


def test_corrupt_member_is_yielded_for_the_decoder():
    samples = _samples()
    samples[1]["png"] = b"\x89PNG\r\n\x1a\n this is not a PNG at all" * 3
    rows = _read(_tar_bytes(samples))
    assert _errors(rows) == []
    assert _members(rows) == _expected(samples)
    assert _members(rows)[f"{SHARD}/part/000001.png"] == samples[1]["png"]


def test_over_size_member_is_one_error_and_reading_goes_on():
    samples = _samples()
    samples[2]["jpg"] = _image(2, "JPEG") + os.urandom(5000)  # trailing bytes: still a JPEG
    limit = max(len(samples[i].get("jpg", samples[i].get("png"))) for i in (0, 1, 3))
    rows = _read(_tar_bytes(samples), limit=limit)
    big = f"{SHARD}/part/000002.jpg"
    assert _errors(rows) == [(big, "TooLarge")]
    assert [row.uri for row in rows] == list(_expected(samples))  # one row each, in order
    assert big not in _members(rows)
    assert str(len(samples[2]["jpg"])) in next(r for r in rows if r.uri == big).message.replace(
        ",", ""
    )


def test_extensions_follow_webdataset_keys():
    assert image_extension("000123.jpg") == "jpg"
    assert image_extension("a/b.c/000123.JPEG") == "jpeg"  # dots in folders don't count
    assert image_extension("000123.seg.png") == "png"  # the final extension decides
    assert image_extension("000123.jpg.json") is None
    assert image_extension("000123.txt") is None
    assert image_extension("._000123.jpg") is None  # macOS AppleDouble: not a sample
    assert image_extension("000123") is None
    assert image_extension("jpg") is None


def test_directories_links_and_odd_names(tmp_path):
    """tarfile directly, since TarWriter writes regular files only."""
    image = _image(0, "JPEG")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("photos.jpg"), None)  # size 0 regular file: an input
        folder = tarfile.TarInfo("sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name in ("sub/a.JPG", "sub/._a.jpg", "sub/a.seg.webp", "sub/a.txt"):
            info = tarfile.TarInfo(name)
            info.size = len(image)
            tar.addfile(info, io.BytesIO(image))
        for link_type, name in ((tarfile.SYMTYPE, "sub/sym.jpg"), (tarfile.LNKTYPE, "hard.jpg")):
            link = tarfile.TarInfo(name)
            link.type = link_type
            link.linkname = "sub/a.JPG"
            tar.addfile(link)
    rows = _read(out.getvalue())
    assert [(row.uri, len(row.data)) for row in rows] == [
        (f"{SHARD}/photos.jpg", 0),
        (f"{SHARD}/sub/a.JPG", len(image)),
        (f"{SHARD}/sub/a.seg.webp", len(image)),
    ]


def test_gzip_shard_is_read_like_a_plain_one():
    samples = _samples()
    data = _tar_bytes(samples, compress=True)
    assert data[:2] == b"\x1f\x8b"
    shard = "gs://bucket/shards/00007.tar.gz"
    assert _members(_read(data, shard=shard)) == _expected(samples, shard)


# --- shards that are not whole ------------------------------------------------------


def _check_cut(data: bytes, cut: int, samples: list[dict]) -> tuple[list, list]:
    """The invariants for any prefix of a shard; returns (members, errors)."""
    rows = _read(data[:cut])
    expected = _expected(samples)
    uris = [row.uri for row in rows]
    assert len(uris) == len(set(uris)), rows
    shard_rows = [row for row in rows if row.uri == SHARD]
    assert len(shard_rows) <= 1
    # Member rows (either kind) come in tar order and are a prefix of the images.
    member_uris = [uri for uri in uris if uri != SHARD]
    assert member_uris == list(expected)[: len(member_uris)]
    for row in rows:
        if isinstance(row, ShardMember):
            assert row.data == expected[row.uri]
    return rows, shard_rows


def test_truncated_shard_at_chosen_offsets():
    samples = _samples()
    data = _tar_bytes(samples)
    layout = {info.name: info for info in _layout(data)}
    images = list(_expected(samples))
    second = layout["part/000001.png"]
    last = layout["part/000003.txt"]
    end_of_members = last.offset_data + (last.size + 511) // 512 * 512

    cases = {
        # cut inside the second image's header: only the first image is known
        "in a header": (second.offset + 700, images[:1], None),
        # cut inside the second image's data: that member is the cut one
        "in a member's data": (second.offset_data + second.size // 2, images[:1], images[1]),
        # cut at the boundary before the third image's header
        "at a member boundary": (layout["part/000002.jpg"].offset, images[:2], None),
        # the second image's data whole, its padding cut: it is yielded whole
        "in a member's padding": (second.offset_data + second.size, images[:2], None),
        # every member whole, the end-of-archive marker missing
        "before the end marker": (end_of_members, images, None),
        # inside a skipped .txt member's data
        "in a caption member": (layout["part/000001.txt"].offset_data + 3, images[:2], None),
    }
    for case, (cut, whole, cut_member) in cases.items():
        rows, shard_rows = _check_cut(data, cut, samples)
        assert list(_members(rows)) == whole, case
        expected_errors = [(cut_member, "TruncatedShard")] if cut_member else []
        assert _errors(rows) == [*expected_errors, (SHARD, "TruncatedShard")], case
        assert rows[-1].uri == SHARD, case
        assert {row.uri for row in rows} == {*whole, *filter(None, [cut_member]), SHARD}, case
        assert "ends before its end-of-archive marker" in shard_rows[0].message, case

    # The message says after how many whole tar members (of any kind) it ended.
    rows = _read(data[: second.offset_data + second.size // 2])
    # 000000.jpg, .json, .txt and 000001.json: TarWriter writes a sample's keys sorted
    assert "after 4 whole members" in rows[-1].message
    assert "member data unreadable" in rows[-2].message


def test_truncated_shard_at_every_offset_keeps_the_invariants():
    samples = _samples(3)
    data = _tar_bytes(samples)
    layout = _layout(data)
    # tarfile, like GNU tar, ends at the first zero block; the second, and the padding
    # to a 10 KiB record, may be missing without loss.
    last = layout[-1]
    whole_from = last.offset_data + (last.size + 511) // 512 * 512 + 512
    boundaries = {offset for info in layout for offset in (info.offset, info.offset_data)}
    cuts = sorted(set(range(0, len(data) + 1, 97)) | boundaries | {whole_from - 1, whole_from})
    for cut in cuts:
        rows, shard_rows = _check_cut(data, cut, samples)
        if cut >= whole_from:
            assert _errors(rows) == [] and len(rows) == 3, cut
        elif cut < layout[0].offset_data:  # not even the first header
            assert _errors(rows) == [(SHARD, "NotATar")], cut
        else:
            assert [row.error_type for row in shard_rows] == ["TruncatedShard"], cut
            # at most the one cut member besides the shard's own row
            assert len(_errors(rows)) <= 2, cut


def test_truncated_gzip_shard():
    samples = _samples()
    data = _tar_bytes(samples, compress=True)
    for cut in range(200, len(data) - 30, 37):
        rows = list(read_shard(io.BytesIO(data[:cut]), SHARD, LIMIT))
        assert [row.error_type for row in rows if row.uri == SHARD] in (
            ["TruncatedShard"],
            ["NotATar"],  # the first tar header was not even decompressed
        ), cut
        assert list(_members(rows)) == list(_expected(samples))[: len(_members(rows))]


def test_garbage_header_mid_shard_is_a_corrupt_shard():
    samples = _samples()
    data = bytearray(_tar_bytes(samples))
    third = next(info for info in _layout(bytes(data)) if info.name == "part/000002.jpg")
    data[third.offset : third.offset + 512] = b"\xa5" * 512  # bad checksum
    rows = _read(bytes(data))
    assert list(_members(rows)) == list(_expected(samples))[:2]
    assert _errors(rows) == [(SHARD, "CorruptShard")]
    assert "after 6 whole members" in rows[-1].message


def test_tars_joined_with_cat_are_a_corrupt_shard():
    """tarfile stops at the first tar's end marker; the second tar's members are not
    read, so the shard must not pass as whole."""
    first, second = _samples(2), _samples(4)[2:]
    rows = _read(_tar_bytes(first) + _tar_bytes(second))
    assert _members(rows) == _expected(first)
    assert _errors(rows) == [(SHARD, "CorruptShard")]
    assert "after the end-of-archive marker, which follows 6 whole members" in rows[-1].message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty (0 bytes)"),
        (os.urandom(20000), ""),
        (b"not a tar\n" * 10, "truncated header"),
        (_image(0, "JPEG"), ""),
        (b"\x1f\x8b\x08", "gzip header is cut short"),
    ],
    ids=["empty", "random", "short-text", "jpeg", "cut-gzip"],
)
def test_not_a_tar(data, reason):
    rows = _read(data)
    assert _errors(rows) == [(SHARD, "NotATar")]
    assert reason in rows[0].message


def test_empty_tar_and_a_tar_without_images_are_one_row_each():
    # An empty tar is zero blocks only (any number of them: 4 KiB of zeros reads the same).
    rows = _read(_tar_bytes([]))
    assert _errors(rows) == [(SHARD, "NoImages")]
    assert "of 0 members" in rows[0].message
    text_only = [{"__key__": f"{i:03d}", "txt": "a caption", "json": b"{}"} for i in range(3)]
    rows = _read(_tar_bytes(text_only))
    assert _errors(rows) == [(SHARD, "NoImages")]
    assert "of 6 members" in rows[0].message


def test_an_error_from_the_stream_itself_propagates():
    """A network failure is not bad data: the caller's retry must see it."""
    data = _tar_bytes(_samples())
    stream = io.BufferedReader(_Unseekable(data, fail_after=20000))
    rows = []
    with pytest.raises(ConnectionResetError):
        rows.extend(read_shard(stream, SHARD, LIMIT))
    # tarfile reads 10 KiB at a time, so the failure shows a record after 20000 bytes
    assert 1 <= len(rows) < 4 and all(isinstance(row, ShardMember) for row in rows)


# --- names ---------------------------------------------------------------------------


def test_is_shard():
    for name in (
        "shards/00007.tar",
        "gs://b/x/00007.TAR",
        "shards/{000..009}.tar",
        "gs://b/x/*.tar",
        "/data/a.tar.gz",
        "/data/a.tgz",
        "https://host/ds/resolve/main/00007.tar?download=true",
    ):
        assert is_shard(name), name
    for name in ("a.jpg", "a.tar/000.jpg", "a.tar.bz", "a.tarx", "https://host/a?f=x.tar", ""):
        assert not is_shard(name), name


def test_expand_braces(monkeypatch):
    assert expand_braces("shards/{000..009}.tar") == [f"shards/{i:03d}.tar" for i in range(10)]
    assert expand_braces("gs://b/{a,b}/{0..1}.tar") == [
        "gs://b/a/0.tar",
        "gs://b/a/1.tar",
        "gs://b/b/0.tar",
        "gs://b/b/1.tar",
    ]
    assert expand_braces("gs://b/shards/00007.tar") == ["gs://b/shards/00007.tar"]
    with pytest.raises(ValueError, match="nbalanced"):
        expand_braces("shards/{000..009.tar")
    monkeypatch.setattr(tar_shards, "MAX_EXPANDED_NAMES", 100)
    with pytest.raises(ValueError, match="more than 100 names"):
        expand_braces("shards/{000000..999999}.tar")


# --- from a bucket ---------------------------------------------------------------------


def test_shard_from_the_gcs_emulator(gcs, tmp_path):
    samples = _samples(6)
    local = tmp_path / "00007.tar"
    local.write_bytes(_tar_bytes(samples))
    gcs.blob("shards/00007.tar").upload_from_filename(str(local))
    uri = "gs://captioning-test/shards/00007.tar"
    with storage.open_binary(uri) as stream:
        rows = list(read_shard(stream, uri, LIMIT))
    assert _errors(rows) == []
    assert _members(rows) == _expected(samples, uri)
