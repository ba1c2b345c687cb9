"""Report I/O through ``tf.io.gfile``, so local paths and ``gs://`` work alike.

TensorFlow is imported on first use only: listing a local folder should not pay
for it, but every caller that touches storage goes through these functions.
"""

from __future__ import annotations

import contextlib
import io
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


class _GFileStream(io.RawIOBase):
    """A GFile as a standard binary stream: pyarrow needs ``closed`` and ``readinto``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._handle = _gfile().GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._handle.seek(offset, whence)
        return self._handle.tell()

    def tell(self) -> int:
        return self._handle.tell()

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for streaming (footer first, then one row group at a time).

    Local files go through pyarrow's own reader; URIs (``gs://``) through ``tf.io.gfile``.
    """
    if not is_remote(path):
        with pq.ParquetFile(path) as parquet:
            yield parquet
        return
    with _GFileStream(path) as stream, pq.ParquetFile(stream) as parquet:
        yield parquet
