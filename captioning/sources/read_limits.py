"""Reading one stored input with a size limit and a deadline, so no input can hang a
worker or fill its memory.

A local path is looked at before it is opened: a directory, a FIFO, a socket or a
device is refused at once (opening a FIFO for reading blocks until someone writes to
it; ``/dev/zero`` never ends). Every read, local or from a bucket, stops at
``max_bytes`` and at ``timeout_s``.
"""

from __future__ import annotations

import os
import stat
import time
from typing import BinaryIO

_CHUNK = 4 * 1024 * 1024


class ReadRefusedError(OSError):
    """An input that cannot be read as one image file; ``error_type`` names why."""

    error_type = "ReadRefused"


class NotAFileError(ReadRefusedError):
    error_type = "NotAFile"


class InputTooLargeError(ReadRefusedError):
    error_type = "TooLarge"


class ReadTimeoutError(ReadRefusedError):
    error_type = "Timeout"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, for the error message."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_limited(handle: BinaryIO, uri: str, max_bytes: int, timeout_s: float) -> bytes:
    """At most ``max_bytes`` from ``handle``, read in chunks until ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = handle.read(min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise InputTooLargeError(f"{uri} is larger than the limit of {max_bytes:,} bytes")
        if time.monotonic() > deadline:
            raise ReadTimeoutError(f"{uri}: reading took longer than {timeout_s:g} s")


def refuse_special_file(path: str) -> None:
    """NotAFileError unless ``path`` is a regular file (checked without opening it)."""
    kind = _kind(os.stat(path).st_mode)
    if kind is not None:
        raise NotAFileError(f"{path} is {kind}, not a file")


def read_local_file(path: str, max_bytes: int, timeout_s: float) -> bytes:
    """The bytes of a regular file; NotAFileError, InputTooLargeError or ReadTimeoutError
    otherwise (and the usual OSError for a missing or unreadable file)."""
    # O_NONBLOCK: opening a FIFO that no one writes to returns at once instead of waiting.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(descriptor)
        kind = _kind(info.st_mode)
        if kind is not None:
            raise NotAFileError(f"{path} is {kind}, not an image file")
        if info.st_size > max_bytes:
            raise InputTooLargeError(
                f"{path} is {info.st_size:,} bytes, over the limit of {max_bytes:,}"
            )
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        return read_limited(handle, path, max_bytes, timeout_s)
