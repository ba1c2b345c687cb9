"""A training progress log that reads well in a terminal and in a CI log alike."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras

log = logging.getLogger("captioning.train")


class ProgressLogger(keras.callbacks.Callback):
    """Logs resume state, a line every ``every_seconds``, and a summary per epoch.

    Also records ``run_state.json`` (epoch, optimizer step) so a restarted run can
    show exactly where it picked up.
    """

    def __init__(
        self,
        epochs: int,
        steps_per_epoch: int,
        global_batch: int,
        run_dir: Path,
        every_seconds: float = 15.0,
    ) -> None:
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.global_batch = global_batch
        self.state_file = Path(run_dir) / "run_state.json"
        self.every_seconds = every_seconds
        self.resumed_from: dict | None = None

    def on_train_begin(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
        if epoch or step:
            self.resumed_from = {"epoch": epoch, "step": step}
            log.info("resumed from checkpoint: epoch %d done, optimizer step %d", epoch, step)
        else:
            log.info(
                "training %d epochs x %d steps, global batch %d",
                self.epochs,
                self.steps_per_epoch,
                self.global_batch,
            )
        self.train_started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = self.last_report = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self.last_report >= self.every_seconds:
            self.last_report = now
            rate = (batch + 1) * self.global_batch / max(now - self.epoch_started, 1e-9)
            log.info(
                "epoch %d/%d step %d/%d loss %.4f (%.1f images/s)",
                self.epoch + 1,
                self.epochs,
                batch + 1,
                self.steps_per_epoch,
                (logs or {}).get("loss", float("nan")),
                rate,
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.monotonic() - self.epoch_started
        step = int(self.model.optimizer.iterations.numpy())
        log.info(
            "epoch %d/%d done in %.0fs: loss %.4f val_loss %.4f (step %d)",
            epoch + 1,
            self.epochs,
            seconds,
            logs.get("loss", float("nan")),
            logs.get("val_loss", float("nan")),
            step,
        )
        self.state_file.write_text(json.dumps({"epoch": epoch + 1, "step": step}))
