"""Where a training run keeps its state: the checkpoint, TensorBoard logs, history, config.

The run directory may be local or ``gs://``. Keras and TensorBoard write to a local
working copy; for a ``gs://`` run the chief uploads what changed after every epoch (so a
preempted machine loses at most the epoch in progress), and every process starts by
downloading the checkpoint and history, so a job restarted on a fresh machine resumes.

In a multi-worker run only the chief writes the run directory. The other workers work in
a scratch directory of their own and read the checkpoint the chief wrote.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import keras

from captioning import storage
from captioning.training.history import HISTORY_CSV
from captioning.training.strategy import WorkerRole

log = logging.getLogger("captioning.train")

# Carried across restarts: resuming needs the checkpoint; the history continues the curves.
CHECKPOINT = "checkpoint"
HISTORY = HISTORY_CSV
# Large and rebuilt from the data; never uploaded.
LOCAL_ONLY = ("cache",)


class RunDirectory:
    def __init__(self, uri: str, role: WorkerRole) -> None:
        self.uri = uri
        self.role = role
        self.remote = storage.is_remote(uri)
        self.scratch = self.remote or not role.is_chief
        self.local = (
            Path(tempfile.mkdtemp(prefix=f"captioning-run-{role.name}-"))
            if self.scratch
            else Path(storage.local_path(uri))
        )
        self.local.mkdir(parents=True, exist_ok=True)
        self._uploaded: dict[str, float] = {}
        if self.remote:
            restored = self._restore()
            log.info(
                "run directory %s (working copy %s): %d files restored", uri, self.local, restored
            )

    def _restore(self) -> int:
        count = storage.download_tree(storage.join(self.uri, CHECKPOINT), self.local / CHECKPOINT)
        return count + storage.download_file(storage.join(self.uri, HISTORY), self.local / HISTORY)

    @property
    def checkpoint_dir(self) -> Path:
        """Read by every process; written by the chief only."""
        if not self.remote and not self.role.is_chief:
            return Path(storage.local_path(self.uri)) / CHECKPOINT  # a local run shares the chief's
        return self.local / CHECKPOINT

    def sync(self) -> None:
        """Upload what changed since the last sync (chief of a ``gs://`` run only)."""
        if self.remote and self.role.is_chief:
            storage.upload_tree(self.local, self.uri, exclude=LOCAL_ONLY, since=self._uploaded)

    def close(self) -> None:
        """Final sync, then remove the scratch copy."""
        self.sync()
        if self.scratch:
            shutil.rmtree(self.local, ignore_errors=True)


class SyncRunDirectory(keras.callbacks.Callback):
    """Uploads the run directory after every epoch; placed after the checkpoint callback."""

    def __init__(self, run: RunDirectory) -> None:
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.sync()
