"""Files on local disk (plain paths or ``file://``) and ``gs://`` objects, through one API.

Every module that reads, writes, lists or copies a file by path goes through here
(the Beam pipelines also keep Beam's own IO transforms). ``gs://`` is served by
``captioning.storage.gcs`` (the google-cloud-storage client; the tests point it at a
local emulator), local paths by the standard library; any other scheme is refused with
``UnsupportedStorageError`` (a one-line ``UserError``, also a ``ValueError``).

- ``is_local`` / ``is_remote`` / ``scheme`` / ``local_path``: THE test of what a path
  names (``captioning.storage.schemes``).
- ``glob`` / ``match`` (with sizes and times) / ``folders``: one pattern syntax
  everywhere, Beam's (``captioning.storage.globbing``).
- ``exists``, ``read_bytes``, ``write_bytes``, ``open_binary``, ``delete``: one file.
- ``newest_change``, ``remove_tree``: a folder (the clean-up of runs that never ended).
- ``copy_file``: THE copy, any of local/``gs://`` to any of local/``gs://``.
- ``upload_tree``, ``download_tree``, ``download_file``: folders (bundles, training
  runs), in parallel through the client's transfer manager.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from captioning.storage import gcs
from captioning.storage.globbing import FileInfo, glob, local_folders, match
from captioning.storage.schemes import (
    UnsupportedStorageError,
    check_supported,
    is_gcs,
    is_local,
    is_remote,
    local_path,
    scheme,
)

__all__ = [
    "BLOCK_SIZE",
    "FileInfo",
    "UnsupportedStorageError",
    "copy_file",
    "delete",
    "download_file",
    "download_tree",
    "exists",
    "folders",
    "glob",
    "is_local",
    "is_remote",
    "join",
    "local_path",
    "match",
    "newest_change",
    "open_binary",
    "read_bytes",
    "remove_tree",
    "scheme",
    "upload_tree",
    "write_bytes",
]

# Streamed copies move this much at a time.
BLOCK_SIZE = 1 << 22

PathLike = str | os.PathLike


def join(uri: PathLike, *parts: str) -> str:
    """``uri/part/...`` for local paths and ``gs://`` alike."""
    return "/".join([os.fspath(uri).rstrip("/"), *(part.strip("/") for part in parts)])


def _local(path: PathLike) -> Path | None:
    """The local path ``path`` names, or None for ``gs://``; refuses other schemes."""
    check_supported(path)
    return Path(local_path(path)) if is_local(path) else None


def exists(path: PathLike) -> bool:
    """Whether a file (``gs://``: an object) is there; a folder is not a file."""
    local = _local(path)
    return local.is_file() if local is not None else gcs.exists(os.fspath(path))


def read_bytes(path: PathLike) -> bytes:
    """The whole file; raises ``OSError`` (``FileNotFoundError`` when it is missing)."""
    local = _local(path)
    return local.read_bytes() if local is not None else gcs.read_bytes(os.fspath(path))


def write_bytes(path: PathLike, data: bytes, content_type: str | None = None) -> None:
    """Write the whole file, making its local folder if needed."""
    local = _local(path)
    if local is None:
        gcs.write_bytes(os.fspath(path), data, content_type=content_type)
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)


def open_binary(path: PathLike) -> BinaryIO:
    """A seekable binary reader; on ``gs://`` it fetches ranges on demand."""
    local = _local(path)
    return local.open("rb") if local is not None else gcs.open_binary(os.fspath(path))


def delete(path: PathLike) -> None:
    """Remove one file; one that is not there is not an error."""
    local = _local(path)
    if local is None:
        gcs.delete(os.fspath(path))
    else:
        local.unlink(missing_ok=True)


def folders(pattern: str) -> list[str]:
    """Folders ``pattern`` matches (its wildcards within one segment: no ``**``), sorted.
    Local folders count even when empty; on ``gs://`` a folder is the objects under it,
    all of which are listed, so this is for small trees (Beam's temporary folders)."""
    if "**" in pattern:  # how one asks to walk through folders: it names none
        return []
    if _local(pattern) is not None:
        return local_folders(pattern)
    depth = pattern.rstrip("/").count("/") + 1
    return sorted({"/".join(f.path.split("/")[:depth]) for f in match(join(pattern, "**"))})


def newest_change(folder: PathLike) -> float | None:
    """The latest modification time (epoch seconds) of ``folder`` or anything in it;
    None when nothing is there."""
    local = _local(folder)
    times = [info.updated for info in match(join(folder, "**"))]
    if local is not None:  # local folders change too (and may be empty)
        times += [Path(path).stat().st_mtime for path, _, _ in os.walk(local)]
    return max(times, default=None)


def remove_tree(folder: PathLike) -> None:
    """Remove ``folder`` and everything in it; one that is not there is not an error."""
    local = _local(folder)
    if local is None:
        gcs.delete_tree(os.fspath(folder))
    else:
        shutil.rmtree(local, ignore_errors=True)


def copy_file(source: PathLike, destination: PathLike) -> None:
    """Copy one file, replacing ``destination``; ``FileNotFoundError`` when ``source`` is
    missing. Between disk and ``gs://`` the client streams the file itself; ``gs://`` to
    ``gs://`` goes through this machine in ``BLOCK_SIZE`` blocks."""
    source_local, destination_local = _local(source), _local(destination)
    if destination_local is not None:
        destination_local.parent.mkdir(parents=True, exist_ok=True)
        if source_local is not None:
            shutil.copyfile(source_local, destination_local)
        else:
            gcs.download_file(os.fspath(source), str(destination_local))
    elif source_local is not None:
        if not source_local.is_file():
            raise FileNotFoundError(str(source))
        gcs.upload_file(str(source_local), os.fspath(destination))
    else:
        from google.api_core.exceptions import NotFound

        try:
            with (
                gcs.open_binary(os.fspath(source)) as reader,
                gcs.open_binary(os.fspath(destination), "wb") as writer,
            ):
                while block := reader.read(BLOCK_SIZE):
                    writer.write(block)
        except NotFound:
            raise FileNotFoundError(str(source)) from None


def _files(root: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every file under ``root``, as sorted relative POSIX paths; top-level entries named
    in ``exclude`` (and everything under them) are left out."""
    found = []
    for folder, subfolders, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        if relative == Path("."):
            subfolders[:] = [name for name in subfolders if name not in exclude]
            names = [name for name in names if name not in exclude]
        found.extend((relative / name).as_posix() for name in names)
    return sorted(path for path in found if (root / path).is_file())


def upload_tree(
    local: PathLike, uri: str, exclude: tuple[str, ...] = (), since: dict[str, float] | None = None
) -> int:
    """Copy every file under the local folder ``local`` to ``uri`` (``gs://``, in parallel
    through the transfer manager; or a local folder), keeping relative paths; returns the
    count. Top-level entries named in ``exclude`` are skipped. With ``since`` (relative
    path -> mtime at the last upload, updated in place) unchanged files are skipped, so a
    per-epoch sync sends only what the epoch wrote. A failed file raises, after the
    others were sent (and recorded in ``since``)."""
    root = Path(local_path(local))
    check_supported(uri)
    pending: list[tuple[str, float]] = []
    for relative in _files(root, exclude):
        mtime = (root / relative).stat().st_mtime
        if since is None or since.get(relative) != mtime:
            pending.append((relative, mtime))
    names = [relative for relative, _ in pending]
    if is_gcs(uri):
        results = gcs.upload_files(root, uri, names)
    else:
        results = []
        for name in names:
            try:
                copy_file(root / name, join(uri, name))
                results.append(None)
            except OSError as error:
                results.append(error)
    if since is not None:
        sent = zip(pending, results, strict=True)
        since.update(entry for entry, failure in sent if failure is None)
    gcs.raise_failures(results)
    return len(names)


def download_tree(uri: str, local: PathLike) -> int:
    """Copy every file under ``uri`` (``gs://``, in parallel through the transfer
    manager; or a local folder) into the local folder ``local``; returns the count (0
    when nothing is there)."""
    destination = Path(local_path(local))
    check_supported(uri)
    if is_gcs(uri):
        return gcs.download_tree(uri, destination)
    root = Path(local_path(uri))
    names = _files(root) if root.is_dir() else []
    for name in names:
        copy_file(root / name, destination / name)
    return len(names)


def download_file(uri: str, local: PathLike) -> bool:
    """Copy one file to the local path ``local``; False (and no file there) when it does
    not exist."""
    try:
        copy_file(uri, local_path(local))
    except FileNotFoundError:
        return False
    return True
