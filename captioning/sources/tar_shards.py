"""Reading WebDataset tar shards into image members for the caption job.

A shard is a plain tar archive as img2dataset, clip-retrieval or ``webdataset``'s
``TarWriter``/``ShardWriter`` write it: each sample is a group of members sharing a key
(``000123.jpg``, ``000123.txt``, ``000123.json``...). Only the image members are inputs;
each becomes one ``ShardMember`` whose uri is ``SHARD/MEMBER_NAME``
(``gs://b/shards/00007.tar/000123.jpg``), so one image has one row whatever else its
sample holds. ``is_shard`` also names gzipped shards (``.tar.gz``, ``.tgz``, which
webdataset reads too); ``read_shard`` reads any shard compressed with gzip, bzip2 or xz,
since ``tarfile``'s stream mode tells the compression from the first bytes.

The tar is read as a stream (``tarfile`` mode ``"r|*"``): the reader need not seek, so
a ``gs://`` object reader or an HTTP response body works, and only one member is held in
memory at a time. No bad shard raises: ``read_shard`` yields, in tar order, one row for
every image member it learns about and one more for the shard itself when the shard
fails, each a ``ShardMember`` or a ``ShardError`` whose ``error_type`` is one CamelCase
word like the other ``captioning.sources`` errors:

==================  ============================================================
``TooLarge``        an image member over ``max_member_bytes`` (its data is skipped)
``TruncatedShard``  the shard ends before its end-of-archive marker: a member whose
                    data was cut short gets one, and the shard gets one more
``CorruptShard``    a header or compressed block mid-shard is garbage (as above), or
                    bytes follow the end-of-archive marker (tars joined with ``cat``)
``NotATar``         the first header cannot be read: not a tar, an empty file, or
                    one cut short inside its first header
``NoImages``        a whole, well-formed tar that holds no image member
==================  ============================================================

A member whose bytes are not an image (garbage in a ``.jpg``) is yielded as a
``ShardMember``: the decoder turns it into one decode-error row, as for any other input.
An error raised by the stream itself (a network failure reading a ``gs://`` object) is
not bad data and propagates, so that the caller's retry (a Beam bundle retry) sees it.
"""

from __future__ import annotations

import itertools
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from braceexpand import braceexpand

from captioning.sources.uris import is_web

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "avif"}
)

# Names of shards, lowercased. tarfile's "r|*" reads the compressed ones unchanged.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")

# A pattern's expansion is materialised as a list; a typo such as {0..999999999} must fail
# at once with a message instead of filling the launcher's memory.
MAX_EXPANDED_NAMES = 1_000_000

# WebDataset's key/extension split (webdataset.tariterators.base_plus_ext), on the
# basename: the key runs to the basename's first dot and must not be empty, so dotfiles
# such as macOS' AppleDouble "._000123.jpg" are not samples and are skipped.
_BASENAME = re.compile(r"[^.]+\.(.*)", re.DOTALL)

# Data errors tarfile lets through unwrapped on odd input (an int() of a garbage field, a
# decompressor's own error class...). Errors from the stream itself are told apart by
# _WatchedStream, so an OSError here is never a network failure.
_DATA_ERRORS = (tarfile.TarError, ValueError, EOFError, OSError)


@dataclass(frozen=True)
class ShardMember:
    """One image member's bytes; ``uri`` is ``f"{shard_uri}/{member_name}"``."""

    uri: str
    data: bytes


@dataclass(frozen=True)
class ShardError:
    """A member that gave no bytes, or a shard-level failure (``uri`` is the shard's)."""

    uri: str
    error_type: str
    message: str


def is_shard(uri: str) -> bool:
    """Whether ``uri`` (a path, URI or brace/glob pattern) names a tar shard: its name
    ends in ``.tar``, ``.tar.gz`` or ``.tgz``, in any case. An http(s) URL is judged by
    its path, so ``https://host/00007.tar?download=true`` is a shard."""
    name = uri
    if is_web(uri):
        name = urlsplit(uri).path
    return name.lower().endswith(SHARD_SUFFIXES)


def expand_braces(pattern: str) -> list[str]:
    """WebDataset-style brace expansion: ``"shards/{000..009}.tar"`` is ten names (the
    padding is kept), ``"{a,b}/{0..1}.tar"`` four; a pattern without braces is itself.
    Raises ValueError for unbalanced braces or past ``MAX_EXPANDED_NAMES`` names."""
    names = list(itertools.islice(braceexpand(pattern), MAX_EXPANDED_NAMES + 1))
    if len(names) > MAX_EXPANDED_NAMES:
        raise ValueError(
            f"{pattern!r} expands to more than {MAX_EXPANDED_NAMES:,} names; "
            "split it into smaller patterns"
        )
    return names


def image_extension(member_name: str) -> str | None:
    """The lowercased final extension of a member that is a WebDataset sample's image
    (``"000123.jpg"``, ``"sub/000123.seg.PNG"``), else None (``.txt``, ``.json``,
    ``.jpg.json``, dotfiles, names with no extension)."""
    match = _BASENAME.fullmatch(member_name.rsplit("/", 1)[-1])
    if match is None:
        return None
    extension = match.group(1).rsplit(".", 1)[-1].lower()
    return extension if extension in IMAGE_EXTENSIONS else None


class _WatchedStream:
    """The shard's reader as tarfile sees it: notes whether the stream has ended, which
    tells a cut-short shard from a corrupt one, and whether the stream itself raised, so
    that its errors propagate instead of becoming rows."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.bytes_read = 0
        self.ended = False
        self.raised = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except BaseException:
            self.raised = True
            raise
        self.bytes_read += len(data)
        # A short read is not the end for a socket or a pipe; only b"" is.
        if not data and size != 0:
            self.ended = True
        return data


def _header_watch(seen: list[tarfile.HeaderError]) -> type[tarfile.TarInfo]:
    """A TarInfo class that records why reading a header failed. tarfile ends the
    iteration quietly, as if at the end-of-archive marker, when a header past the first
    is missing, cut short or garbage; only the recorded reason tells those apart."""

    class _HeaderWatch(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(tar)
            except tarfile.HeaderError as error:
                seen.append(error)
                raise

    return _HeaderWatch


def read_shard(
    stream: BinaryIO, shard_uri: str, max_member_bytes: int
) -> Iterator[ShardMember | ShardError]:
    """Yield, in tar order, a ``ShardMember`` for each regular-file image member and a
    ``ShardError`` for each image member over ``max_member_bytes`` or cut short; then one
    ``ShardError`` for the shard (uri ``shard_uri``) if it is cut short, corrupt, not a
    tar, or a whole tar without images. Other members, directories and links are
    skipped. Never raises for bad data; errors raised by ``stream`` itself propagate."""
    watched = _WatchedStream(stream)
    header_errors: list[tarfile.HeaderError] = []
    try:
        # Opened here and closed by the `with tar:` below, so that a failure to open is
        # told apart from one while reading.
        tar = tarfile.open(  # noqa: SIM115
            fileobj=watched, mode="r|*", tarinfo=_header_watch(header_errors)
        )
    # TypeError: tarfile's gzip header parser calls ord() on b"" when the file ends
    # inside the gzip header.
    except (*_DATA_ERRORS, TypeError) as error:
        if watched.raised:
            raise
        if watched.bytes_read == 0:
            reason = "it is empty (0 bytes)"
        elif isinstance(error, TypeError):
            reason = "its gzip header is cut short"
        else:
            reason = _cause(error)
        yield ShardError(shard_uri, "NotATar", f"not a tar archive: {reason}")
        return

    members = 0  # tar entries read whole, of every kind: the count a reader can check
    skipped = 0  # 1 while a skipped entry's data is unread: tarfile reads past it next
    rows = 0
    with tar:
        while True:
            try:
                info = tar.next()
            except _DATA_ERRORS as error:
                # Raised between members: the skipped entry's data or padding, or a
                # compressed block, could not be read.
                if watched.raised:
                    raise
                yield _shard_failure(shard_uri, watched, members, error)
                return
            members, skipped = members + skipped, 0
            if info is None:
                break
            # A stream-mode TarFile keeps every TarInfo it has read; webdataset empties
            # the list too, so that a shard of a million members costs no memory.
            tar.members = []
            if not info.isreg() or image_extension(info.name) is None:
                skipped = 1
                continue
            uri = f"{shard_uri}/{info.name}"
            rows += 1
            if info.size > max_member_bytes:
                skipped = 1
                yield ShardError(
                    uri,
                    "TooLarge",
                    f"{info.size:,} bytes, over the {max_member_bytes:,}-byte limit",
                )
                continue
            try:
                data = tar.extractfile(info).read()
            except _DATA_ERRORS as error:
                if watched.raised:
                    raise
                failure = _shard_failure(shard_uri, watched, members, error)
                yield ShardError(
                    uri, failure.error_type, f"member data unreadable: {_cause(error)}"
                )
                yield failure
                return
            members += 1
            yield ShardMember(uri, data)

        ending = header_errors[-1] if header_errors else None
        if ending is not None and not isinstance(ending, tarfile.EOFHeaderError):
            # A missing or cut-short header is a shard cut at or after a member boundary;
            # a garbage one is corruption (or bytes appended by something that was not tar).
            truncated = isinstance(ending, (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError))
            yield _shard_failure(shard_uri, watched, members, ending, truncated=truncated)
            return
        # tarfile stops at the first zero block. Tars joined with `cat` (not `tar -A`) hold
        # more members after it, which would vanish with no row: look past the marker.
        trailing = _first_nonzero_byte(tar.fileobj)
        if trailing is not None:
            yield ShardError(
                shard_uri,
                "CorruptShard",
                f"non-zero bytes {trailing:,} bytes after the end-of-archive marker, which "
                f"follows {members} whole members; tars joined with cat? Only what comes "
                "before the marker was read (join tars with tar --concatenate instead)",
            )
            return
    if rows == 0:
        yield ShardError(
            shard_uri,
            "NoImages",
            f"a whole tar of {members} members, none of them an image "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))})",
        )


def _first_nonzero_byte(stream) -> int | None:
    """How far past the current position the first non-zero byte lies, or None when
    only zeros (the rest of the end marker and the record padding) are left."""
    seen = 0
    while chunk := stream.read(1 << 16):
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return seen + len(chunk) - len(stripped)
        seen += len(chunk)
    return None


def _cause(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _shard_failure(
    shard_uri: str,
    watched: _WatchedStream,
    members: int,
    error: BaseException,
    truncated: bool | None = None,
) -> ShardError:
    """The shard's own row: cut short when the stream had ended (or the header reading
    said so), corrupt when bytes were there but were not tar."""
    if truncated is None:
        truncated = watched.ended
    what = "ends before its end-of-archive marker" if truncated else "is corrupt"
    return ShardError(
        shard_uri,
        "TruncatedShard" if truncated else "CorruptShard",
        f"the shard {what} after {members} whole members "
        f"({watched.bytes_read:,} bytes read): {_cause(error)}",
    )
