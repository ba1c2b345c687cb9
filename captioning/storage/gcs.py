"""``gs://`` through the google-cloud-storage client: the only code here that talks to GCS.

The client uses Application Default Credentials on a cloud machine and honours
``STORAGE_EMULATOR_HOST`` (the tests run a local GCS emulator). TensorFlow's own GCS
filesystem cannot be pointed at an emulator, so nothing here uses it. Folders are copied
in parallel by the client's transfer manager, in threads (no subprocess has to rebuild
the client, and the emulator's client works as it is).

Callers use ``captioning.storage``, which takes local paths and ``gs://`` alike.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

PREFIX = "gs://"
# Parallel transfers of a folder (the transfer manager's default).
TRANSFER_WORKERS = 8


def split(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, name = uri[len(PREFIX) :].partition("/")
    return bucket, name.strip("/")


_clients: dict[tuple[int, str | None], Any] = {}
_clients_lock = threading.Lock()


def client():
    """This process's client. Made once: making one looks up credentials (on a cloud
    machine, a call to the metadata server), which a worker reading one object per image
    must not pay per image. The client is shared by threads, as the transfer manager's
    own threads share it. Keyed by pid (a forked child needs its own connections) and
    by the emulator's address (the tests start one per session)."""
    from google.cloud import storage

    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    key = (os.getpid(), emulator)
    with _clients_lock:
        if key not in _clients:
            made = storage.Client.create_anonymous_client() if emulator else storage.Client()
            _clients[key] = made
        return _clients[key]


def _blob(uri: str):
    bucket_name, name = split(uri)
    return client().bucket(bucket_name).blob(name)


def raise_failures(results: list) -> None:
    """Raise the first failure of a batch of transfers (after the whole batch ran)."""
    for result in results:
        if isinstance(result, Warning):  # the transfer manager refused it: not downloaded
            raise ValueError(str(result))
        if isinstance(result, BaseException):
            raise result


def upload_files(local: Path, uri: str, files: list[str]) -> list[BaseException | None]:
    """Upload ``files`` (relative to ``local``) to ``uri`` under the same relative names,
    in parallel; per file, None when it was uploaded, else the exception."""
    from google.cloud.storage import transfer_manager

    if not files:
        return []
    bucket_name, prefix = split(uri)
    results = transfer_manager.upload_many_from_filenames(
        client().bucket(bucket_name),
        files,
        source_directory=str(local),
        blob_name_prefix=f"{prefix}/" if prefix else "",
        worker_type=transfer_manager.THREAD,
        max_workers=TRANSFER_WORKERS,
    )
    return [result if isinstance(result, BaseException) else None for result in results]


def download_tree(uri: str, local: Path) -> int:
    """Download every object under ``uri`` into ``local``, in parallel; returns the count
    (0 when nothing is there). An object whose name would land outside ``local`` is refused."""
    from google.cloud.storage import transfer_manager

    bucket_name, prefix = split(uri)
    bucket = client().bucket(bucket_name)
    names = []
    for blob in bucket.client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
        relative = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
        if relative and not relative.endswith("/"):  # not a "folder" placeholder
            names.append(relative)
    if not names:
        return 0
    results = transfer_manager.download_many_to_path(
        bucket,
        names,
        destination_directory=str(local),
        blob_name_prefix=f"{prefix}/" if prefix else "",
        create_directories=True,
        worker_type=transfer_manager.THREAD,
        max_workers=TRANSFER_WORKERS,
    )
    # A name escaping the folder comes back as a UserWarning (not downloaded).
    raise_failures(results)
    return len(names)


def list_objects(uri_prefix: str) -> Iterator[tuple[str, int, float]]:
    """(URI, size, last change in epoch seconds) of every object whose URI starts with
    ``uri_prefix`` (not only a folder's), page by page as the caller reads on."""
    bucket_name, _, name_prefix = uri_prefix[len(PREFIX) :].partition("/")
    blobs = client().list_blobs(bucket_name, prefix=name_prefix or None)
    for blob in blobs:
        updated = blob.updated.timestamp() if blob.updated is not None else 0.0
        yield f"{PREFIX}{bucket_name}/{blob.name}", blob.size or 0, updated


def exists(uri: str) -> bool:
    return bool(split(uri)[1]) and _blob(uri).exists()


def read_bytes(uri: str) -> bytes:
    """The object's bytes; ``FileNotFoundError`` when there is none."""
    from google.api_core.exceptions import NotFound

    try:
        return _blob(uri).download_as_bytes()
    except NotFound:
        raise FileNotFoundError(uri) from None


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    _blob(uri).upload_from_string(data, content_type=content_type)


def open_binary(uri: str, mode: str = "rb") -> BinaryIO:
    """``"rb"``: a seekable reader that fetches ranges on demand (Parquet footers first);
    ``"wb"``: a writer that uploads in chunks."""
    return _blob(uri).open(mode)


def upload_file(local: str, uri: str) -> None:
    _blob(uri).upload_from_filename(local)


def download_file(uri: str, local: str) -> None:
    """``FileNotFoundError`` (and no file at ``local``) when the object does not exist."""
    from google.api_core.exceptions import NotFound

    try:
        _blob(uri).download_to_filename(local)
    except NotFound:
        Path(local).unlink(missing_ok=True)
        raise FileNotFoundError(uri) from None


def delete_tree(uri: str) -> int:
    """Remove every object under the folder ``uri``; returns how many there were."""
    bucket_name, prefix = split(uri)
    blobs = list(client().list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None))
    from google.api_core.exceptions import NotFound

    for blob in blobs:
        with contextlib.suppress(NotFound):  # a concurrent clean-up got there first
            blob.delete()
    return len(blobs)


def delete(uri: str) -> None:
    """Remove the object; one that is not there is not an error."""
    from google.api_core.exceptions import NotFound

    with contextlib.suppress(NotFound):
        _blob(uri).delete()
