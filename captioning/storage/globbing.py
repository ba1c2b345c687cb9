"""One glob for local paths and ``gs://``, with the semantics of Beam's ``FileSystems.match``.

``*`` matches within one path segment (never ``/``), ``**`` matches anything, ``/``
included (``a/**/b`` needs at least one folder between ``a`` and ``b``, as in Beam),
``?`` one character and ``[...]``/``[!...]`` one character of a set, both within a
segment. A pattern ending in ``/`` means every file under that folder. There is no way
to quote a wildcard character. A pattern without wildcards matches the one file it
names, if it is there.

Only files (objects) are matched, never folders; a FIFO or a device counts as a file,
for its reader to refuse. Results are sorted and spelled as the pattern is (``file://``
kept). The pattern is translated to a regex once
(``translate``); the listing starts from its literal part: the objects under that name
prefix on ``gs://``, the files under the folder it ends in on local disk (a folder
deeper than the pattern can reach is not walked).

Beam's own ``?`` and ``[...]`` also match ``/``; here they do not (no pattern the jobs
take depends on that), which is what lets a local walk stop at the pattern's depth.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from captioning.storage import gcs
from captioning.storage.schemes import FILE_PREFIX, check_supported, is_gcs, scheme


@dataclass(frozen=True)
class FileInfo:
    """A matched file: its path (spelled as the pattern is), size and last change."""

    path: str
    size: int
    updated: float  # seconds since the epoch


_WILDCARD = re.compile(r"[*?\[]")


def translate(pattern: str) -> str:
    """The regex (matched against a whole path) of a glob ``pattern``."""
    i, n = 0, len(pattern)
    parts = []
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                parts.append(".*")
                i += 1
            else:
                parts.append("[^/]*")
        elif c == "?":
            parts.append("[^/]")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                parts.append(r"\[")
                continue
            members = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            if members[0] == "!":
                members = "^" + members[1:]
            elif members[0] == "^":
                members = "\\" + members
            parts.append(f"(?!/)[{members}]")
        else:
            parts.append(re.escape(c))
    return r"(?s)" + "".join(parts) + r"\Z"


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard."""
    return _WILDCARD.split(pattern, maxsplit=1)[0]


def _local_walk(pattern: str, folders: bool = False) -> Iterator[str]:
    """Files (or, with ``folders``, folders) as ``pattern`` spells paths, at the depth the
    pattern reaches under the folder where its literal part ends (everywhere below with
    ``**``). Candidates only: the caller matches them against the pattern."""
    prefix = literal_prefix(pattern)
    if prefix == pattern:
        # As in a walk (and in Beam), anything that is not a folder is a file here: a
        # FIFO or a device named outright is listed, for its reader to refuse.
        if (
            os.path.isdir(pattern)
            if folders
            else os.path.exists(pattern) and not os.path.isdir(pattern)
        ):
            yield pattern
        return
    top = prefix[: prefix.rfind("/") + 1]  # "" (this folder), "/", or "a/b/"
    # Without "**" a match has exactly as many "/" as the pattern: deeper is never walked.
    depth = None if "**" in pattern else pattern.count("/") - top.count("/")
    for folder, subfolders, files in os.walk(top or "."):
        relative = os.path.relpath(folder, top or ".")
        level = 0 if relative == "." else relative.count(os.sep) + 1
        spelled = top if relative == "." else f"{top}{relative}/"
        if depth is None or level == depth:
            yield from (spelled + name for name in (subfolders if folders else files))
        if depth is not None and level >= depth:
            subfolders.clear()


def local_folders(pattern: str) -> list[str]:
    """Local folders that ``pattern`` (a path without ``**``: ``**`` is how one asks to
    walk through folders) matches, sorted."""
    if "**" in pattern:
        return []
    matches = re.compile(translate(pattern.rstrip("/"))).match
    return sorted(path for path in _local_walk(pattern.rstrip("/"), folders=True) if matches(path))


def _local_infos(pattern: str) -> Iterator[FileInfo]:
    matches = re.compile(translate(pattern)).match
    for path in _local_walk(pattern):
        if matches(path):
            try:
                info = os.stat(path)
            except FileNotFoundError:  # removed while we listed
                continue
            yield FileInfo(path, info.st_size, info.st_mtime)


def _gcs_infos(pattern: str) -> Iterator[FileInfo]:
    matches = re.compile(translate(pattern)).match
    prefix = literal_prefix(pattern)
    # Without a wildcard the pattern names one object: list that name's prefix anyway
    # (one call, and it gives size and time), keeping only the exact name.
    for uri, size, updated in gcs.list_objects(prefix):
        # Objects named ".../" are the console's "folders": never files.
        if not uri.endswith("/") and matches(uri):
            yield FileInfo(uri, size, updated)


def match(pattern: str, limit: int | None = None) -> list[FileInfo]:
    """Files or objects matching ``pattern``, sorted by path; at most ``limit`` of them
    (the first found, for "is there anything?"). A missing folder matches nothing."""
    check_supported(pattern)
    if pattern.endswith("/"):
        pattern += "*"
    if is_gcs(pattern):
        found = _gcs_infos(pattern)
    else:
        spelled = FILE_PREFIX if scheme(pattern) == "file" else ""
        found = (
            FileInfo(spelled + info.path, info.size, info.updated)
            for info in _local_infos(pattern[len(spelled) :])
        )
    return sorted(itertools.islice(found, limit), key=lambda info: info.path)


def glob(pattern: str, limit: int | None = None) -> list[str]:
    """Sorted files or objects matching ``pattern`` (see ``match``)."""
    return [info.path for info in match(pattern, limit)]
