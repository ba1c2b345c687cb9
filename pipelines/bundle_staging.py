"""Copying a model bundle from gs:// to local disk (through ``captioning.storage``), once
per worker, and checking that it is the bundle the job expects.

A remote bundle is staged into a private per-user cache (mode 0700, owned by this
user: on a shared machine nobody else can plant or swap a bundle there). It is
downloaded into a fresh folder inside the cache, verified against its manifest, and
only then renamed to a folder named by its verified model id. A cached folder is reused
only when it is named by the model id that the remote manifest declares now, and it
verifies again: so a bundle replaced at the same URI is staged again, and a cached copy
that was edited on disk is not trusted.

The model id is a hash of the files' contents (``captioning.bundle``), so pinning it
(``expected_model_id``) catches a bundle whose files were edited even when its
manifest was re-hashed to match.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from captioning import storage
from captioning.bundle import CONTENT_FILES, MANIFEST_FILE, verify_bundle
from captioning.errors import BundleError

# What ``captioning.bundle`` writes. A declared id becomes a folder name, so anything
# else (``../x``, an absolute path) is refused before it touches the disk.
_MODEL_ID = re.compile(r"^sha256-[0-9a-f]{32}$")


def default_cache_dir() -> Path:
    """The per-user staging cache: ``$TMPDIR/captioning-bundles-<uid>``."""
    return Path(tempfile.gettempdir()) / f"captioning-bundles-{os.getuid()}"


def stage_bundle(
    uri: str, expected_model_id: str | None = None, cache_dir: str | os.PathLike | None = None
) -> str:
    """A local directory holding the verified bundle at ``uri``.

    Local bundles (a path or ``file://``) are used in place, as a path (verified only
    when ``expected_model_id`` is given;
    ``load_bundle`` verifies them anyway). Remote ones are staged into ``cache_dir``
    (default ``default_cache_dir()``). With ``expected_model_id``, a bundle whose
    verified model id differs is refused with ``BundleError``.
    """
    if storage.is_local(uri):
        path = storage.local_path(uri)
        if expected_model_id is not None:
            _refuse_unexpected(uri, verify_bundle(path), expected_model_id)
        return path
    root = _private_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    declared = _declared_model_id(uri)
    if expected_model_id is not None:
        # The manifest's id is what verification would prove or refuse, so a different
        # one is refused before anything is downloaded.
        _refuse_unexpected(uri, declared, expected_model_id)
    cached = root / declared
    if cached.is_dir():
        with contextlib.suppress(BundleError):
            if verify_bundle(str(cached)) == declared:
                return str(cached)
        # Damaged or edited on disk: discard it and stage again.
        shutil.rmtree(cached, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        _download(uri, staging)
        model_id = verify_bundle(str(staging))
        if expected_model_id is not None:
            _refuse_unexpected(uri, model_id, expected_model_id)
        # Named by the verified id, not the declared one: the remote bundle may have
        # changed between reading its manifest and downloading it.
        target = root / model_id
        for _ in range(2):
            try:
                # Atomic: concurrent workers never see half a bundle.
                os.rename(staging, target)
                return str(target)
            except OSError:
                # Another process staged the same content first: theirs is used if it
                # verifies; if not, it is removed and ours takes its place.
                with contextlib.suppress(BundleError):
                    if verify_bundle(str(target)) == model_id:
                        return str(target)
                shutil.rmtree(target, ignore_errors=True)
        raise BundleError(f"model bundle {uri} could not be staged into {target}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_model_id(uri: str, expected: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Verify the bundle at ``uri`` (staging it if remote) and return its model id;
    ``BundleError`` unless the id is ``expected``."""
    # stage_bundle verifies the content hashes and compares the id before returning.
    stage_bundle(uri, expected_model_id=expected, cache_dir=cache_dir)
    return expected


def read_model_id(uri: str) -> str:
    """The bundle's model id from its manifest, without loading the model."""
    return json.loads(storage.read_bytes(storage.join(uri, MANIFEST_FILE)))["model_id"]


def _refuse_unexpected(uri: str, model_id: str, expected: str) -> None:
    if model_id != expected:
        raise BundleError(
            f"--model {uri} has model id {model_id}, but --expect-model-id is {expected}; "
            "refusing it"
        )


def _declared_model_id(uri: str) -> str:
    """The model id the remote manifest declares now (unverified: it only names a folder)."""
    try:
        declared = read_model_id(uri)
    except Exception:  # noqa: BLE001 - missing, unreadable or not JSON: all "no manifest"
        raise BundleError(f"model bundle {uri} has no readable {MANIFEST_FILE}") from None
    if not isinstance(declared, str) or not _MODEL_ID.match(declared):
        raise BundleError(f"model bundle {uri} declares an invalid model id {declared!r:.80}")
    return declared


def _download(uri: str, local: Path) -> None:
    """Copy exactly the bundle's files; a missing one is left for verify_bundle to name."""
    for name in (*CONTENT_FILES, MANIFEST_FILE):
        # The bytes as stored (no decompression), which is what the manifest hashed.
        storage.download_file(storage.join(uri, name), local / name)


def _private_dir(root: Path) -> Path:
    """``root``, created 0700 if missing; refused unless it is a real directory owned by
    this user, and tightened to 0700 if it is looser."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise BundleError(f"bundle cache {root} is not a directory (a link?); refusing to use it")
    if info.st_uid != os.getuid():
        raise BundleError(
            f"bundle cache {root} belongs to uid {info.st_uid}, not this user "
            f"({os.getuid()}); refusing to use it"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root
