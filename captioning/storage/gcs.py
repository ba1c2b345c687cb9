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
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PREFIX = "gs://"
# Parallel transfers of a folder (the transfer manager's default).
TRANSFER_WORKERS = 8


def split(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, name = uri[len(PREFIX) :].partition("/")
    return bucket, name.strip("/")


def client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client.create_anonymous_client()
    return storage.Client()


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


def list_uris(uri_prefix: str) -> Iterator[str]:
    """Every object whose URI starts with ``uri_prefix`` (not only a folder's)."""
    bucket_name, _, name_prefix = uri_prefix[len(PREFIX) :].partition("/")
    for blob in client().list_blobs(bucket_name, prefix=name_prefix or None):
        yield f"{PREFIX}{bucket_name}/{blob.name}"


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


def delete(uri: str) -> None:
    """Remove the object; one that is not there is not an error."""
    from google.api_core.exceptions import NotFound

    with contextlib.suppress(NotFound):
        _blob(uri).delete()
