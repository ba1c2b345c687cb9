"""Report I/O through ``tf.io.gfile``, so local paths and ``gs://`` work alike.

TensorFlow is imported on first use only: listing a local folder should not pay
for it, but every caller that touches storage goes through these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyarrow.parquet as pq


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_remote(path: str) -> bool:
    return "://" in path


def glob(pattern: str) -> list[str]:
    """Sorted matches of ``pattern``; an unreadable or missing folder matches nothing."""
    import tensorflow as tf

    try:
        return sorted(tf.io.gfile.glob(pattern))
    except tf.errors.NotFoundError:
        return []


def exists(path: str) -> bool:
    return _gfile().exists(path)


def read_bytes(path: str) -> bytes:
    """The whole file; raises ``OSError`` (local) or ``tf.errors.OpError`` (remote)."""
    with _gfile().GFile(path, "rb") as handle:
        return handle.read()


def write_bytes(path: str, data: bytes) -> None:
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    _gfile().makedirs(parent)
    with _gfile().GFile(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for streaming; local files go through pyarrow's own reader."""
    if not is_remote(path):
        with pq.ParquetFile(path) as parquet:
            yield parquet
        return
    with _gfile().GFile(path, "rb") as handle, pq.ParquetFile(handle) as parquet:
        yield parquet
