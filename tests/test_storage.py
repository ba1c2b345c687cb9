"""``captioning.storage``: one API for local paths (plain or ``file://``) and ``gs://``.

``gs://`` runs against a local GCS emulator (the ``gcs`` fixture in tests/conftest.py):
one glob with Beam's semantics on disk and in a bucket, the one copy in all four
directions, and folder transfers through the client's transfer manager.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from captioning import storage
from captioning.errors import UserError
from captioning.storage import gcs as gcs_client
from tests.conftest import GCS_BUCKET

BUCKET = f"gs://{GCS_BUCKET}"


# --- what a path names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "kind", "local"),
    [
        ("images/a.jpg", None, True),
        ("/data/images/a.jpg", None, True),
        ("file:///data/images/a.jpg", "file", True),
        ("FILE:///data/a.jpg", "file", True),
        ("gs://bucket/images/a.jpg", "gs", False),
        ("GS://bucket/a.jpg", "gs", False),
        ("https://example.com/a.jpg", "https", False),
        ("s3://bucket/a.jpg", "s3", False),
        ("a:b/c.jpg", None, True),  # a colon is not a scheme without "://"
    ],
)
def test_one_test_of_what_a_path_names(uri, kind, local):
    assert storage.scheme(uri) == kind
    assert storage.is_local(uri) is local
    assert storage.is_remote(uri) is not local
    assert storage.is_local(Path("/x/y")) and not storage.is_remote(Path("/x/y"))


def test_local_path_strips_file_uris_only():
    assert storage.local_path("file:///data/a.jpg") == "/data/a.jpg"
    assert storage.local_path("/data/a.jpg") == "/data/a.jpg"
    assert storage.local_path("gs://b/a.jpg") == "gs://b/a.jpg"


def test_the_job_and_storage_share_the_one_test():
    from captioning import run_layout
    from captioning.sources import uris

    assert uris.scheme is storage.scheme and uris.is_local is storage.is_local
    assert run_layout.output_folder("gs://b/out/", "tables") == "gs://b/out"
    assert run_layout.output_folder("file:///tmp/out", "tables") == "/tmp/out"


@pytest.mark.parametrize("uri", ["s3://bucket/a.jpg", "https://example.com/a.jpg"])
def test_other_schemes_are_refused_in_one_line(uri, tmp_path):
    for call in (
        lambda: storage.read_bytes(uri),
        lambda: storage.exists(uri),
        lambda: storage.glob(uri + "*"),
        lambda: storage.copy_file(uri, tmp_path / "a.jpg"),
        lambda: storage.upload_tree(tmp_path, uri),
    ):
        with pytest.raises(storage.UnsupportedStorageError) as refused:
            call()
        assert isinstance(refused.value, UserError) and isinstance(refused.value, ValueError)
        assert "only local paths, file:// and gs:// are supported" in str(refused.value)


# --- one glob -------------------------------------------------------------------------

TREE = [
    "a.jpg",
    "a1.jpg",
    "ab.png",
    "b.jpg",
    "b2.jpg",
    "c.txt",
    "other/x.jpg",
    "sub/a.jpg",
    "sub/b.jpg",
    "sub/deep/a.jpg",
    "sub/deep/c.jpg",
    "sub/deep/deeper/a.jpg",
]
PATTERNS = {
    "*": ["a.jpg", "a1.jpg", "ab.png", "b.jpg", "b2.jpg", "c.txt"],
    "*.jpg": ["a.jpg", "a1.jpg", "b.jpg", "b2.jpg"],
    "?.jpg": ["a.jpg", "b.jpg"],
    "??.jpg": ["a1.jpg", "b2.jpg"],
    "[ab].jpg": ["a.jpg", "b.jpg"],
    "[!a]*.jpg": ["b.jpg", "b2.jpg"],
    "a[0-9].jpg": ["a1.jpg"],
    "sub/*": ["sub/a.jpg", "sub/b.jpg"],
    "sub/": ["sub/a.jpg", "sub/b.jpg"],
    "*/a.jpg": ["sub/a.jpg"],
    "sub/*/a.jpg": ["sub/deep/a.jpg"],
    "**/a.jpg": ["sub/a.jpg", "sub/deep/a.jpg", "sub/deep/deeper/a.jpg"],
    "sub/**": [
        "sub/a.jpg",
        "sub/b.jpg",
        "sub/deep/a.jpg",
        "sub/deep/c.jpg",
        "sub/deep/deeper/a.jpg",
    ],
    "s*/**.jpg": [
        "sub/a.jpg",
        "sub/b.jpg",
        "sub/deep/a.jpg",
        "sub/deep/c.jpg",
        "sub/deep/deeper/a.jpg",
    ],
    "**.txt": ["c.txt"],
    "**[xc].jpg": ["other/x.jpg", "sub/deep/c.jpg"],
    "c.txt": ["c.txt"],
    "sub/deep": [],  # a folder is not a file
    "missing/*": [],
    "missing.jpg": [],
}


def _write_tree(root: Path) -> None:
    for name in TREE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())


def _relative(root: str, matches: list[str]) -> list[str]:
    assert all(match.startswith(root + "/") for match in matches), matches
    return [match[len(root) + 1 :] for match in matches]


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    _write_tree(root)
    return root


@pytest.fixture(scope="module")
def gcs_tree(gcs, local_tree) -> str:
    for name in TREE:
        gcs.blob(f"tree/{name}").upload_from_string(name.encode())
    gcs.blob("tree-sibling/a.jpg").upload_from_string(b"outside the tree")
    return f"{BUCKET}/tree"


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_one_glob_on_disk_and_in_a_bucket(pattern, local_tree, gcs_tree):
    local = _relative(str(local_tree), storage.glob(f"{local_tree}/{pattern}"))
    remote = _relative(gcs_tree, storage.glob(f"{gcs_tree}/{pattern}"))
    assert local == remote == PATTERNS[pattern]
    as_uri = storage.glob(f"file://{local_tree}/{pattern}")
    assert as_uri == [f"file://{local_tree}/{name}" for name in PATTERNS[pattern]]


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_the_glob_agrees_with_beam(pattern, local_tree):
    from apache_beam.io.filesystems import FileSystems

    full = f"{local_tree}/{pattern}"
    beam = sorted(m.path for m in FileSystems.match([full])[0].metadata_list)
    beam = [path for path in beam if os.path.isfile(path)]  # a literal folder matches itself
    assert storage.glob(full) == beam


def test_wildcards_never_cross_a_folder_but_double_star_does(local_tree, gcs_tree):
    # Beam's own "?" would match "/" here ("sub/a.jpg"); ours stays in one segment.
    for root in (str(local_tree), gcs_tree):
        assert storage.glob(f"{root}/sub?a.jpg") == []
        assert storage.glob(f"{root}/sub[/]a.jpg") == []
        assert storage.glob(f"{root}/s*a.jpg") == []
        assert _relative(root, storage.glob(f"{root}/s**a.jpg")) == [
            "sub/a.jpg",
            "sub/deep/a.jpg",
            "sub/deep/deeper/a.jpg",
        ]


def test_a_relative_pattern_is_spelled_as_given(local_tree, monkeypatch):
    monkeypatch.chdir(local_tree)
    assert storage.glob("*.txt") == ["c.txt"]
    assert storage.glob("sub/*.jpg") == ["sub/a.jpg", "sub/b.jpg"]
    assert storage.glob("./sub/deep/*.jpg") == ["./sub/deep/a.jpg", "./sub/deep/c.jpg"]


def test_match_gives_sizes_and_times_and_stops_at_a_limit(local_tree, gcs_tree):
    for root in (str(local_tree), gcs_tree):
        found = storage.match(f"{root}/sub/**")
        assert [f.path for f in found] == storage.glob(f"{root}/sub/**")
        # Each file holds its own name, so its size is the length of the name.
        assert [f.size for f in found] == [
            len(p) for p in _relative(root, storage.glob(f"{root}/sub/**"))
        ]
        assert all(abs(f.updated - time.time()) < 3600 for f in found)
        first_two = storage.glob(f"{root}/**.jpg", limit=2)
        assert len(first_two) == 2 and set(first_two) <= set(storage.glob(f"{root}/**.jpg"))


def test_a_console_folder_placeholder_is_not_a_file(gcs, gcs_tree):
    gcs.blob("tree/sub/").upload_from_string(b"")  # what "create folder" makes
    try:
        assert f"{gcs_tree}/sub/" not in storage.glob(f"{gcs_tree}/**")
        assert _relative(gcs_tree, storage.glob(f"{gcs_tree}/sub/*")) == ["sub/a.jpg", "sub/b.jpg"]
    finally:
        gcs.blob("tree/sub/").delete()


def test_a_fifo_is_listed_for_its_reader_to_refuse(tmp_path):
    # As Beam's match does: the reader says "not a file", rather than the glob "nothing".
    os.mkfifo(tmp_path / "pipe.jpg")
    assert storage.glob(str(tmp_path / "pipe.jpg")) == [str(tmp_path / "pipe.jpg")]
    assert storage.glob(str(tmp_path / "*.jpg")) == [str(tmp_path / "pipe.jpg")]
    assert not storage.exists(tmp_path / "pipe.jpg")  # but it is no file to read


def test_folders_a_pattern_matches(local_tree, gcs_tree):
    (local_tree / "empty").mkdir(exist_ok=True)
    assert _relative(str(local_tree), storage.folders(f"{local_tree}/*")) == [
        "empty",
        "other",
        "sub",
    ]
    # A bucket has no empty folders: a folder is the objects under it.
    assert _relative(gcs_tree, storage.folders(f"{gcs_tree}/*")) == ["other", "sub"]
    for root in (str(local_tree), gcs_tree):
        assert _relative(root, storage.folders(f"{root}/s?b/d*")) == ["sub/deep"]
        assert storage.folders(f"{root}/*.jpg") == []  # files are not folders
        assert storage.folders(f"{root}/**") == []  # ** walks folders; it names none


def test_a_folder_is_timed_by_its_newest_change_and_removed_whole(place):
    folder = storage.join(place, "run")
    assert storage.newest_change(folder) is None
    old = time.time() - 10 * 3600
    for name in ("a.bin", "deep/b.bin"):
        storage.write_bytes(storage.join(folder, name), b"x")
    if storage.is_local(place):
        for path in Path(storage.local_path(folder)).rglob("*"):
            os.utime(path, (old, old))
        os.utime(storage.local_path(folder), (old, old))
        assert abs(storage.newest_change(folder) - old) < 1
        storage.write_bytes(storage.join(folder, "deep/c.bin"), b"new")
    newest = storage.newest_change(folder)
    assert abs(newest - time.time()) < 600
    storage.remove_tree(folder)
    storage.remove_tree(folder)  # already gone: not an error
    assert storage.newest_change(folder) is None
    assert storage.glob(storage.join(folder, "**")) == []


def test_one_client_per_process(gcs):
    assert gcs_client.client() is gcs_client.client()


# --- one file ---------------------------------------------------------------------------


@pytest.fixture(params=["local", "file", "gs"])
def place(request, tmp_path, gcs):
    """A folder to read and write in: a path, a file:// URI or a gs:// prefix."""
    return {
        "local": str(tmp_path),
        "file": f"file://{tmp_path}",
        "gs": f"{BUCKET}/files/{tmp_path.name}",
    }[request.param]


def test_one_file_anywhere(place):
    path = storage.join(place, "deep/er", "a.bin")
    assert not storage.exists(path)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(path)
    storage.write_bytes(path, b"0123456789")
    assert storage.exists(path) and storage.read_bytes(path) == b"0123456789"
    assert not storage.exists(storage.join(place, "deep"))  # a folder is not a file
    with storage.open_binary(path) as reader:
        reader.seek(6)
        assert reader.read(2) == b"67"
        reader.seek(-3, os.SEEK_END)
        assert reader.read() == b"789"
    assert storage.glob(storage.join(place, "**.bin")) == [path]
    storage.delete(path)
    storage.delete(path)  # already gone: not an error
    assert not storage.exists(path)


def test_join():
    assert storage.join("gs://b/x/", "/y/", "z") == "gs://b/x/y/z"
    assert storage.join(Path("/tmp/a"), "b") == "/tmp/a/b"


# --- the one copy -----------------------------------------------------------------------

DIRECTIONS = [("local", "local"), ("local", "gs"), ("gs", "local"), ("gs", "gs")]


@pytest.mark.parametrize(("source_kind", "destination_kind"), DIRECTIONS)
def test_copy_file_in_every_direction(source_kind, destination_kind, tmp_path, gcs, monkeypatch):
    # Several blocks and a partial one, so the gs -> gs stream loops.
    monkeypatch.setattr(storage, "BLOCK_SIZE", 1 << 16)
    data = os.urandom(3 * (1 << 16) + 123)
    prefix = f"copy/{source_kind}-{destination_kind}"

    def place(kind: str, name: str) -> str:
        return str(tmp_path / name) if kind == "local" else f"{BUCKET}/{prefix}/{name}"

    source = place(source_kind, "source/a.bin")
    storage.write_bytes(source, data)
    destination = place(destination_kind, "new/folder/b.bin")
    storage.copy_file(source, destination)
    assert storage.read_bytes(destination) == data
    storage.write_bytes(source, b"replaced")
    storage.copy_file(source, destination)  # an existing destination is replaced
    assert storage.read_bytes(destination) == b"replaced"
    with pytest.raises(FileNotFoundError):
        storage.copy_file(place(source_kind, "missing.bin"), place(destination_kind, "c.bin"))
    assert not storage.exists(place(destination_kind, "c.bin"))


def test_copy_file_takes_file_uris(tmp_path, gcs):
    (tmp_path / "a.txt").write_text("hello")
    storage.copy_file(f"file://{tmp_path}/a.txt", f"{BUCKET}/copy/file-uri.txt")
    storage.copy_file(f"{BUCKET}/copy/file-uri.txt", f"file://{tmp_path}/b.txt")
    assert (tmp_path / "b.txt").read_text() == "hello"


# --- folders, through the transfer manager ------------------------------------------------


@pytest.fixture
def transfers(monkeypatch):
    """Records every transfer-manager batch (and its worker type) while passing it on."""
    from google.cloud.storage import transfer_manager

    calls = []
    for name in ("upload_many_from_filenames", "download_many_to_path"):
        original = getattr(transfer_manager, name)

        def spy(bucket, names, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, sorted(names), kwargs.get("worker_type")))
            return _original(bucket, names, *args, **kwargs)

        monkeypatch.setattr(transfer_manager, name, spy)
    return calls


def _run_folder(root: Path) -> None:
    for name in [
        "history.csv",
        "checkpoint/latest.weights.h5",
        "checkpoint/training_metadata.json",
        "tensorboard/train/events.out",
        "cache/features.bin",  # excluded: a top-level entry
        "nested/cache/kept.txt",  # only top-level entries are excluded
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def _tree(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_upload_and_download_a_folder(tmp_path, gcs, transfers):
    from google.cloud.storage import transfer_manager

    local = tmp_path / "run"
    _run_folder(local)
    uri = f"{BUCKET}/runs/one"
    since: dict[str, float] = {}
    assert storage.upload_tree(local, uri, exclude=("cache",), since=since) == 5
    expected = {k: v for k, v in _tree(local).items() if not k.startswith("cache/")}
    assert sorted(since) == sorted(expected)
    names = {blob.name for blob in gcs.client.list_blobs(GCS_BUCKET, prefix="runs/one/")}
    assert names == {f"runs/one/{name}" for name in expected}

    # Unchanged files are not sent again; a changed one is.
    assert storage.upload_tree(local, uri, exclude=("cache",), since=since) == 0
    changed = local / "checkpoint" / "training_metadata.json"
    changed.write_text('{"epoch": 2}')
    os.utime(changed, (1e9, 1e9))
    assert storage.upload_tree(local, uri, exclude=("cache",), since=since) == 1
    assert since["checkpoint/training_metadata.json"] == 1e9

    back = tmp_path / "back"
    assert storage.download_tree(uri, back) == 5
    assert _tree(back) == {k: v for k, v in _tree(local).items() if not k.startswith("cache/")}
    assert storage.download_tree(storage.join(uri, "checkpoint"), tmp_path / "ckpt") == 2
    assert storage.download_tree(f"{BUCKET}/runs/none", tmp_path / "none") == 0
    assert not (tmp_path / "none").exists()

    uploads = [call for call in transfers if call[0] == "upload_many_from_filenames"]
    downloads = [call for call in transfers if call[0] == "download_many_to_path"]
    assert [len(call[1]) for call in uploads] == [5, 1]  # the empty sync sends nothing
    assert len(downloads) == 2
    assert {call[2] for call in transfers} == {transfer_manager.THREAD}


def test_without_since_every_file_goes(tmp_path, gcs):
    local = tmp_path / "bundle"
    _run_folder(local)
    uri = f"{BUCKET}/bundles/all"
    assert storage.upload_tree(local, uri) == 6
    assert storage.upload_tree(local, uri) == 6
    assert storage.download_tree(uri, tmp_path / "back") == 6
    assert _tree(tmp_path / "back") == _tree(local)


def test_folders_between_local_paths(tmp_path):
    local = tmp_path / "run"
    _run_folder(local)
    assert storage.upload_tree(local, f"file://{tmp_path}/copy", exclude=("cache",)) == 5
    assert storage.download_tree(str(tmp_path / "copy"), tmp_path / "back") == 5
    assert _tree(tmp_path / "back") == _tree(tmp_path / "copy")


def test_download_file(tmp_path, gcs):
    gcs.blob("single/history.csv").upload_from_string(b"epoch\n0\n")
    target = tmp_path / "a" / "history.csv"
    assert storage.download_file(f"{BUCKET}/single/history.csv", target)
    assert target.read_bytes() == b"epoch\n0\n"
    missing = tmp_path / "b" / "history.csv"
    assert not storage.download_file(f"{BUCKET}/single/missing.csv", missing)
    assert not missing.exists()


def test_a_failed_upload_raises_after_the_batch_and_is_not_recorded(tmp_path, gcs, monkeypatch):
    local = tmp_path / "run"
    _run_folder(local)
    upload_files = gcs_client.upload_files

    def one_fails(root, uri, files):
        results = upload_files(root, uri, files)
        return [
            OSError("lost") if f == "history.csv" else r
            for f, r in zip(files, results, strict=True)
        ]

    monkeypatch.setattr(gcs_client, "upload_files", one_fails)
    since: dict[str, float] = {}
    with pytest.raises(OSError, match="lost"):
        storage.upload_tree(local, f"{BUCKET}/runs/failing", since=since)
    assert "history.csv" not in since and "checkpoint/latest.weights.h5" in since
    assert gcs.blob("runs/failing/checkpoint/latest.weights.h5").exists()


# --- the training paths that used tf.io.gfile ---------------------------------------------


def test_training_reads_gs_through_storage(tmp_path, gcs):
    from captioning.training.checkpoint import completed_epochs
    from captioning.training.feature_spec import file_sha256

    gcs.blob("train/checkpoint/training_metadata.json").upload_from_string(b'{"epoch": 3}')
    assert completed_epochs(f"{BUCKET}/train/checkpoint") == 3
    assert completed_epochs(f"{BUCKET}/train/none") == 0
    (tmp_path / "w.h5").write_bytes(os.urandom(5 * (1 << 20)))
    storage.copy_file(tmp_path / "w.h5", f"{BUCKET}/train/w.h5")
    assert file_sha256(f"{BUCKET}/train/w.h5") == file_sha256(str(tmp_path / "w.h5"))


def test_a_name_the_transfer_manager_refuses_is_an_error():
    # download_many_to_path does not write an object whose name leaves the folder
    # ("a/../../x"); it reports a UserWarning instead, which download_tree raises.
    gcs_client.raise_failures([None, None])
    with pytest.raises(ValueError, match="NOT"):
        gcs_client.raise_failures([None, UserWarning("The blob ../x will **NOT** be downloaded")])
    with pytest.raises(KeyError):
        gcs_client.raise_failures([KeyError("k"), None])
