"""Copying directory trees between local disk and ``gs://``: bundles and training runs.

``gs://`` goes through the google-cloud-storage client, which uses Application Default
Credentials on a cloud machine and honours ``STORAGE_EMULATOR_HOST`` (the tests run a
local GCS emulator). TensorFlow's own GCS filesystem cannot be pointed at an emulator,
so these copies do not use it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import BinaryIO

SCHEME = "gs://"


def is_remote(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(SCHEME)


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *(part.strip("/") for part in parts)])


def _split(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    return bucket, prefix.strip("/")


def _client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client.create_anonymous_client()
    return storage.Client()


def upload_tree(
    local: Path, uri: str, exclude: tuple[str, ...] = (), since: dict[str, float] | None = None
) -> int:
    """Upload every file under ``local`` to ``uri``, keeping relative paths; returns the
    count. Top-level entries named in ``exclude`` are skipped. With ``since`` (relative
    path -> mtime at the last upload, updated in place) unchanged files are skipped, so a
    per-epoch sync sends only what the epoch wrote."""
    bucket_name, prefix = _split(uri)
    bucket = _client().bucket(bucket_name)
    count = 0
    for path in sorted(Path(local).rglob("*")):
        relative = path.relative_to(local).as_posix()
        if not path.is_file() or relative.split("/", 1)[0] in exclude:
            continue
        mtime = path.stat().st_mtime
        if since is not None and since.get(relative) == mtime:
            continue
        bucket.blob(f"{prefix}/{relative}" if prefix else relative).upload_from_filename(str(path))
        if since is not None:
            since[relative] = mtime
        count += 1
    return count


def download_tree(uri: str, local: Path) -> int:
    """Download every object under ``uri`` into ``local``; returns the count (0 when
    nothing is there)."""
    bucket_name, prefix = _split(uri)
    client = _client()
    count = 0
    for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
        relative = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
        if not relative or relative.endswith("/"):
            continue
        target = Path(local) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
        count += 1
    return count


def download_file(uri: str, local: Path) -> bool:
    """Download one object; False when it does not exist."""
    from google.api_core.exceptions import NotFound

    bucket_name, name = _split(uri)
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    try:
        _client().bucket(bucket_name).blob(name).download_to_filename(str(local))
    except NotFound:
        Path(local).unlink(missing_ok=True)
        return False
    return True


def glob(pattern: str) -> list[str]:
    """Sorted ``gs://`` URIs matching ``pattern`` (``*``, ``?`` and ``[...]`` as in fnmatch,
    ``*`` also crossing ``/``); objects are listed from the prefix before the first wildcard."""
    bucket_name, name_pattern = _split(pattern)
    literal = re.split(r"[*?\[]", name_pattern, maxsplit=1)[0]
    blobs = _client().list_blobs(bucket_name, prefix=literal or None)
    return sorted(
        f"{SCHEME}{bucket_name}/{blob.name}"
        for blob in blobs
        if fnmatch.fnmatchcase(blob.name, name_pattern)
    )


def exists(uri: str) -> bool:
    bucket_name, name = _split(uri)
    return _client().bucket(bucket_name).blob(name).exists()


def read_bytes(uri: str) -> bytes:
    """The object's bytes; ``FileNotFoundError`` when there is none."""
    from google.api_core.exceptions import NotFound

    bucket_name, name = _split(uri)
    try:
        return _client().bucket(bucket_name).blob(name).download_as_bytes()
    except NotFound:
        raise FileNotFoundError(uri) from None


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    bucket_name, name = _split(uri)
    _client().bucket(bucket_name).blob(name).upload_from_string(data, content_type=content_type)


def open_binary(uri: str) -> BinaryIO:
    """A seekable binary reader that fetches ranges on demand (Parquet footers first)."""
    bucket_name, name = _split(uri)
    return _client().bucket(bucket_name).blob(name).open("rb")
