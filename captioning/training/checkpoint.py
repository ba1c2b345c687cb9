"""The per-epoch training checkpoint, safe when several workers share one run directory.

Keras' ``BackupAndRestore`` restores weights, optimizer state and the epoch at the start
of ``fit`` and saves them after every epoch. It does not know about multi-worker runs:
every worker would write the same files at once. Here every worker restores from the
shared checkpoint (so they all resume from the same state), and only the chief writes it.
Two generations are kept, so a worker killed mid-write leaves the previous one usable.
"""

from __future__ import annotations

import json

import keras

from captioning import storage


class SharedBackupAndRestore(keras.callbacks.BackupAndRestore):
    def __init__(self, backup_dir: str, is_chief: bool = True) -> None:
        # The checkpoint is kept after the run, so rerunning a finished command only
        # re-exports the bundle instead of training again.
        super().__init__(backup_dir, double_checkpoint=True, delete_checkpoint=False)
        self.is_chief = is_chief

    def _save_model(self):
        if self.is_chief:
            super()._save_model()


def completed_epochs(backup_dir: str) -> int:
    """Epochs recorded in the checkpoint's metadata (0 for a fresh run)."""
    path = storage.join(backup_dir, "training_metadata.json")
    try:
        return int(json.loads(storage.read_bytes(path))["epoch"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0
