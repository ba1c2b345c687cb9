"""What kind of place a path or URI names: THE one test, used everywhere.

A URI is local when it has no scheme (a plain path, relative or absolute) or is
``file://``; anything with another scheme (``gs://``, ``https://``, ``s3://``...) is
remote. Which remote schemes can be read is up to the reader: ``captioning.storage``
reads ``gs://``; the caption job also fetches ``http(s)://`` (``captioning.sources``).
"""

from __future__ import annotations

import os
import re

from captioning.errors import UserError

FILE = "file"
GCS = "gs"
FILE_PREFIX = "file://"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class UnsupportedStorageError(UserError, ValueError):
    """A path whose scheme ``captioning.storage`` cannot read or write (one line)."""


def scheme(uri: str | os.PathLike) -> str | None:
    """The URI's scheme, lowercased (``"gs"``, ``"https"``), or None for a plain path."""
    match = _SCHEME.match(os.fspath(uri))
    return match.group(1).lower() if match else None


def is_local(uri: str | os.PathLike) -> bool:
    """A path on this machine's disk: no scheme, or ``file://``."""
    return scheme(uri) in (None, FILE)


def is_remote(uri: str | os.PathLike) -> bool:
    return not is_local(uri)


def is_gcs(uri: str | os.PathLike) -> bool:
    return scheme(uri) == GCS


def local_path(uri: str | os.PathLike) -> str:
    """A local URI as a path: ``file://`` stripped (``file:///a/b`` -> ``/a/b``)."""
    text = os.fspath(uri)
    return text[len(FILE_PREFIX) :] if scheme(text) == FILE else text


def check_supported(uri: str | os.PathLike) -> None:
    """Refuse, in one line, a scheme ``captioning.storage`` does not serve."""
    if not (is_local(uri) or is_gcs(uri)):
        raise UnsupportedStorageError(f"{uri}: only local paths, file:// and gs:// are supported")
