"""Report I/O for local paths (plain or ``file://``) and ``gs://`` alike.

``gs://`` goes through ``captioning.storage`` (the google-cloud-storage client, which the
tests point at a local GCS emulator); local paths through the standard library.
"""

from __future__ import annotations

import contextlib
import glob as local_glob
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from captioning import storage as cloud

FILE_SCHEME = "file://"


def is_remote(path: str) -> bool:
    return "://" in path


def _local(path: str) -> str:
    return path[len(FILE_SCHEME) :] if path.startswith(FILE_SCHEME) else path


def _check_scheme(path: str) -> None:
    if is_remote(path) and not path.startswith(FILE_SCHEME) and not cloud.is_remote(path):
        raise ValueError(f"{path}: only local paths, file:// and gs:// are supported")


def glob(pattern: str) -> list[str]:
    """Sorted matches of ``pattern``; a missing folder matches nothing."""
    _check_scheme(pattern)
    if cloud.is_remote(pattern):
        return cloud.glob(pattern)
    prefix = FILE_SCHEME if pattern.startswith(FILE_SCHEME) else ""
    return sorted(prefix + match for match in local_glob.glob(_local(pattern)))


def exists(path: str) -> bool:
    _check_scheme(path)
    return cloud.exists(path) if cloud.is_remote(path) else Path(_local(path)).exists()


def read_bytes(path: str) -> bytes:
    """The whole file; raises ``OSError`` (``FileNotFoundError`` when it is missing)."""
    _check_scheme(path)
    return cloud.read_bytes(path) if cloud.is_remote(path) else Path(_local(path)).read_bytes()


def write_bytes(path: str, data: bytes) -> None:
    _check_scheme(path)
    if cloud.is_remote(path):
        cloud.write_bytes(path, data)
        return
    local = Path(_local(path))
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for streaming (footer first, then one row group at a time)."""
    _check_scheme(path)
    if not cloud.is_remote(path):
        with pq.ParquetFile(_local(path)) as parquet:
            yield parquet
        return
    with cloud.open_binary(path) as stream, pq.ParquetFile(stream) as parquet:
        yield parquet
