"""What kind of place an input URI names, and its one spelling.

The caption job reads local paths, ``gs://`` objects and ``http(s)://`` URLs. Every
URI is normalised once, where it is listed, so that one file has one spelling and so
one row: ``file://`` becomes a plain path and a relative path becomes absolute. A
scheme the job cannot read (``s3://``, ``ftp://``...) is refused with one line that
says what to do instead.
"""

from __future__ import annotations

import os

# The one test of what a URI names (``is_local``, ``scheme``), shared with captioning.storage.
from captioning.storage.schemes import is_local, local_path, scheme

__all__ = ["UnsupportedUriError", "is_local", "is_web", "normalize", "scheme"]

WEB_SCHEMES = ("http", "https")
STORED_SCHEMES = ("gs",)

# Schemes people try, with what to do instead.
_ADVICE = {
    "s3": "copy the images to gs:// (Storage Transfer Service) or list presigned "
    "https:// URLs in a manifest",
}


class UnsupportedUriError(ValueError):
    """A URI whose scheme the job cannot read; the message is one line."""

    error_type = "UnsupportedScheme"


def is_web(uri: str) -> bool:
    return scheme(uri) in WEB_SCHEMES


def normalize(uri: str, base: str | None = None) -> str:
    """The one spelling of ``uri``: stripped, ``file://`` turned into a path, a relative
    path made absolute against ``base`` (the launcher's working directory; default
    this process's). Raises UnsupportedUriError for a scheme the job cannot read."""
    uri = uri.strip()
    kind = scheme(uri)
    if kind in WEB_SCHEMES or kind in STORED_SCHEMES:
        return uri
    if kind == "file":
        uri = local_path(uri)
        # file://host/path names another machine; only file:///path is this one's.
        if not uri.startswith("/"):
            raise UnsupportedUriError(
                f"{uri!r}: a file:// URI must be file:///absolute/path on this machine"
            )
    elif kind is not None:
        advice = _ADVICE.get(kind, "use a local path, gs:// or https://")
        raise UnsupportedUriError(f"{kind}:// is not supported: {advice}")
    return os.path.normpath(os.path.join(base or os.getcwd(), uri))
