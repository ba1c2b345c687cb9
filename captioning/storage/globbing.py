"""One glob for local paths and ``gs://``, with the semantics of Beam's ``FileSystems.match``.

``*`` matches within one path segment (never ``/``), ``**`` matches anything, ``/``
included (``a/**/b`` needs at least one folder between ``a`` and ``b``, as in Beam),
``?`` one character and ``[...]``/``[!...]`` one character of a set, both within a
segment. A pattern ending in ``/`` means every file under that folder. There is no way
to quote a wildcard character. A pattern without wildcards matches the one file it
names, if it is there.

Only files (objects) are matched, never folders; results are sorted and spelled as the
pattern is (``file://`` kept). The pattern is translated to a regex once
(``translate``); the listing starts from its literal part: the objects under that name
prefix on ``gs://``, the files under the folder it ends in on local disk (a folder
deeper than the pattern can reach is not walked).

Beam's own ``?`` and ``[...]`` also match ``/``; here they do not (no pattern the jobs
take depends on that), which is what lets a local walk stop at the pattern's depth.
"""

from __future__ import annotations

import os
import re

from captioning.storage import gcs
from captioning.storage.schemes import FILE_PREFIX, check_supported, is_gcs, scheme

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


def _local_files(pattern: str) -> list[str]:
    """Files (as ``pattern`` spells paths) under the folder where the literal part ends."""
    prefix = literal_prefix(pattern)
    if prefix == pattern:
        return [pattern] if os.path.isfile(pattern) else []
    top = prefix[: prefix.rfind("/") + 1]  # "" (this folder), "/", or "a/b/"
    # Without "**" a match has exactly as many "/" as the pattern: deeper is never walked.
    depth = None if "**" in pattern else pattern.count("/") - top.count("/")
    found = []
    for folder, subfolders, files in os.walk(top or "."):
        relative = os.path.relpath(folder, top or ".")
        level = 0 if relative == "." else relative.count(os.sep) + 1
        spelled = top if relative == "." else f"{top}{relative}/"
        if depth is not None and level >= depth:
            subfolders.clear()
        if depth is None or level == depth:
            found.extend(spelled + name for name in files)
    return found


def glob(pattern: str) -> list[str]:
    """Sorted files or objects matching ``pattern``; a missing folder matches nothing."""
    check_supported(pattern)
    if pattern.endswith("/"):
        pattern += "*"
    if is_gcs(pattern):
        prefix = literal_prefix(pattern)
        if prefix == pattern:
            candidates = [pattern] if gcs.exists(pattern) else []
        else:
            candidates = gcs.list_uris(prefix)
        spelled, path = "", pattern
    else:
        spelled = FILE_PREFIX if scheme(pattern) == "file" else ""
        path = pattern[len(spelled) :]
        candidates = _local_files(path)
    matches = re.compile(translate(path)).match
    return sorted(spelled + candidate for candidate in candidates if matches(candidate))
