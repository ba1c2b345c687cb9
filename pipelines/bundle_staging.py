"""Copying a model bundle from any Beam filesystem (gs://, local) to local disk, once per worker."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from apache_beam.io.filesystems import FileSystems


def stage_bundle(uri: str) -> str:
    """A local directory with the bundle's files; local bundles are used in place."""
    if FileSystems.get_scheme(uri) in (None, "file") and Path(uri).is_dir():
        return uri
    root = Path(tempfile.gettempdir()) / "captioning-bundles"
    root.mkdir(parents=True, exist_ok=True)
    target = root / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / ".complete").exists():
        return str(target)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=root))
    matches = FileSystems.match([FileSystems.join(uri, "*")])[0].metadata_list
    for match in matches:
        name = match.path.rstrip("/").rsplit("/", 1)[-1]
        with FileSystems.open(match.path) as reader, open(staging / name, "wb") as writer:
            while block := reader.read(1 << 22):
                writer.write(block)
    (staging / ".complete").write_text(uri)
    # Atomic: concurrent workers never see half a bundle. If another process staged
    # it first, the rename fails and theirs is used.
    with contextlib.suppress(OSError):
        os.replace(staging, target)
    return str(target)


def read_model_id(uri: str) -> str:
    """The bundle's model id from its manifest, without loading the model."""
    import json

    with FileSystems.open(FileSystems.join(uri, "manifest.json")) as handle:
        return json.loads(handle.read())["model_id"]
