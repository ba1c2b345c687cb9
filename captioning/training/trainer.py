"""``captioning train``: captions + images in, a model bundle out.

The model and optimizer are built inside ``strategy.scope()``; the global batch
is the per-replica batch times the replica count; Keras scales the loss by the
replica count, so one replica and N replicas on the same global batch take the
same step. Checkpoints (``BackupAndRestore``) make a killed run resume at the
epoch where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioning.bundle import save_bundle
from captioning.config import CaptionerConfig, TrainConfig, to_json
from captioning.data.formats import read_captions
from captioning.data.records import CaptionSet
from captioning.errors import UserError, WorkerLostError
from captioning.models.captioner import Captioner
from captioning.precision import dtype_policy, resolve_precision
from captioning.text.vocabulary import Vocabulary
from captioning.training import input_pipeline
from captioning.training.checkpoint import SharedBackupAndRestore, completed_epochs
from captioning.training.example_cache import build_cache
from captioning.training.feature_shards import open_feature_shards
from captioning.training.history import HISTORY_CSV, HISTORY_PNG, plot_history
from captioning.training.progress import ProgressLogger
from captioning.training.run_directory import RunDirectory, SyncRunDirectory
from captioning.training.strategy import make_strategy, synchronize_batch_norm, worker_role

log = logging.getLogger("captioning.train")


@dataclass
class TrainResult:
    bundle: str | None  # None on workers other than the chief
    model_id: str
    history: dict[str, list[float]]
    epochs_run: int
    resumed_from: dict | None
    seconds: float
    weights_fingerprint: str
    is_chief: bool = True


def build_captioner(
    config: CaptionerConfig, vocabulary: Vocabulary, load_backbone_weights: bool = True
) -> Captioner:
    return Captioner.for_vocabulary(config, vocabulary, load_backbone_weights)


def compile_captioner(model: Captioner, config: TrainConfig, steps_per_epoch: int = 0) -> None:
    learning_rate = config.learning_rate
    if steps_per_epoch and config.epochs > 1:
        # Cosine decay to 5% of the peak: the last epochs take small steps, which also
        # lets a from-scratch backbone's batch-norm statistics settle before export.
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.05
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=5.0),
        # Mean over real (non-padding) tokens: the mask arrives as sample weights.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        steps_per_execution=config.steps_per_execution,
    )


def _dataset_statistics(dataset: tf.data.Dataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the (decoded, resized) training images, in pixel units."""
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for _, image in dataset.as_numpy_iterator():
        pixels = image.reshape(-1, 3).astype(np.float64)
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 1e-6))
    return mean.tolist(), std.tolist()


def _require_splits(data: CaptionSet) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    train = data.captions_by_image("train")
    val = data.captions_by_image("val")
    if not train:
        raise UserError(f"no usable training captions in {data.report.source}")
    if not val:
        raise UserError(f"no validation images in {data.report.source}; need at least one")
    return train, val


def train(
    captions: str,
    images: str | None,
    out: str,
    config: TrainConfig,
    format: str | None = None,
    strategy_kind: str = "auto",
    run_dir: str | None = None,
    feature_cache_dir: str | None = None,
    features: str | None = None,
) -> TrainResult:
    started = time.monotonic()
    # Precomputed features (``captioning features``) replace the backbone pass; the
    # images directory is then optional, and only filters captions of missing files.
    shards = open_feature_shards(features) if features else None
    if shards is None and images is None:
        raise UserError("give the images directory, or --features DIR")
    if shards is not None:
        if config.captioner.encoder.trainable:
            raise UserError("--features trains from frozen-backbone features; freeze the backbone")
        config = dataclasses.replace(config, captioner=shards.spec.apply_to(config.captioner))
    # Reproducible initial weights (and identical ones on every worker of a cluster).
    keras.utils.set_random_seed(config.seed)
    data = read_captions(
        captions, images, format, seed=config.seed, val_fraction=config.val_fraction
    )
    log.info(data.report.summary())
    train_captions, val_captions = _require_splits(data)
    vocabulary = Vocabulary.build(
        [c for caps in train_captions.values() for c in caps],
        config.vocabulary_size,
        config.max_caption_words,
    )
    log.info(
        "%d training images, %d validation images, vocabulary %d words, max length %d",
        len(train_captions),
        len(val_captions),
        vocabulary.size,
        vocabulary.max_length,
    )
    strategy = make_strategy(strategy_kind)
    role = worker_role(strategy)
    multi_worker = role.task_type is not None
    # Only the chief writes the run directory and the bundle; other workers of a
    # multi-worker run write their own files to a scratch directory removed at the end.
    run = RunDirectory(run_dir or f"{out.rstrip('/')}.run", role)
    work = run.local
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    precision = resolve_precision(config.precision)
    log.info(
        "strategy %s: %d replica(s), %s, precision %s",
        type(strategy).__name__,
        replicas,
        role.name,
        precision,
    )

    image_dir = Path(images) if images is not None else None
    frozen = not config.captioner.encoder.trainable
    cache_root = Path(feature_cache_dir or work / "cache")
    if feature_cache_dir and not role.is_chief:
        cache_root = cache_root / role.name
    train_names, val_names = list(train_captions), list(val_captions)
    if config.captioner.image.normalization == "dataset" and config.captioner.image.mean is None:
        pixels = build_cache("pixels", image_dir, train_names, config.captioner, cache_root)
        mean, std = _dataset_statistics(pixels.dataset())
        image = dataclasses.replace(config.captioner.image, mean=tuple(mean), std=tuple(std))
        config = dataclasses.replace(
            config, captioner=dataclasses.replace(config.captioner, image=image)
        )
        log.info("dataset normalisation: mean %s std %s", np.round(mean, 1), np.round(std, 1))
    (work / "train_config.json").write_text(to_json(config))
    (work / "vocabulary.json").write_text(vocabulary.to_json())

    with dtype_policy(precision), strategy.scope():
        model = build_captioner(config.captioner, vocabulary, load_backbone_weights=shards is None)
        if shards is not None:
            # The backbone that computed the features, so the bundle captions consistently.
            shards.load_backbone(model.encoder.backbone)

    sync_batch_norm = replicas > 1 and config.captioner.encoder.trainable
    if sync_batch_norm:
        layers = synchronize_batch_norm(model.encoder.backbone)
        log.info("batch normalisation over the global batch in %d backbone layers", layers)

    # Epochs still to run: a resumed run's datasets are sized to what is left.
    remaining = config.epochs - completed_epochs(str(run.checkpoint_dir))
    kind = "features" if frozen else "pixels"
    encode = (
        (lambda batch: model.encoder.backbone_features(batch, training=False)) if frozen else None
    )
    datasets = []
    for names, captions_by_image, training in (
        (train_names, train_captions, True),
        (val_names, val_captions, False),
    ):
        if shards is not None:
            cache = shards.cache_for(names)
        else:
            cache = build_cache(kind, image_dir, names, config.captioner, cache_root, encode)
        tokens, counts = input_pipeline.encode_captions(captions_by_image, cache.images, vocabulary)
        datasets.append(
            input_pipeline.caption_batches(
                cache.dataset(),
                tokens,
                counts,
                global_batch,
                training,
                inputs_key="features" if frozen else "images",
                augment_config=config.augment,
                vocabulary=vocabulary,
                in_memory=_keep_in_memory(config.image_cache, cache, training),
                seed=config.seed,
                # The training iterator lives for the whole run. With one replica Keras
                # restarts the validation iterator every epoch, so it gets one pass that
                # runs dry; a distributed iterator is kept across epochs, so it repeats.
                epochs=max(remaining, 1) if training else (None if replicas > 1 else 1),
            )
        )
        if training:
            train_size = len(cache.images)
        else:
            validation_steps = math.ceil(len(cache.images) / global_batch)
    train_ds, val_ds = datasets
    if train_size < global_batch:
        raise UserError(
            f"{train_size} training images is fewer than one global batch of {global_batch}; "
            "lower --batch-size"
        )
    steps_per_epoch = train_size // global_batch
    with dtype_policy(precision), strategy.scope():
        compile_captioner(model, config, steps_per_epoch)

    progress = ProgressLogger(config.epochs, steps_per_epoch, global_batch, work)
    callbacks = [
        # The per-epoch checkpoint: weights, optimizer state and epoch. First, so it is
        # restored before anything else looks. Every worker restores it; the chief writes.
        SharedBackupAndRestore(str(run.checkpoint_dir), is_chief=role.is_chief),
        keras.callbacks.TensorBoard(str(work / "tensorboard"), update_freq=50),
        # Appends, so a resumed run extends the curves of the run it resumes.
        keras.callbacks.CSVLogger(str(work / HISTORY_CSV), append=True),
        progress,
        # Last, so a gs:// run uploads the checkpoint and logs this epoch just wrote.
        SyncRunDirectory(run),
    ]
    if config.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
                verbose=0,
            )
        )
    try:
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,  # the dataset shuffles itself; this only silences Keras' warning
        )
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        if not multi_worker:
            raise
        # A peer was preempted or crashed: collectives cannot finish without it. Every
        # worker stops; a restarted job resumes from the chief's last checkpoint.
        done = completed_epochs(str(run.checkpoint_dir))
        run.close()
        raise WorkerLostError(
            f"{role.name} lost contact with the cluster ({_short_reason(error)}); restart the job "
            f"to resume from the checkpoint after epoch {done}"
        ) from None
    if sync_batch_norm:
        # The bundle is for inference on any number of devices.
        synchronize_batch_norm(model.encoder.backbone, enabled=False)
    fingerprint = weights_fingerprint(model)
    # Every worker saves (saving may read distributed variables collectively), but only
    # the chief's copy is the bundle; the others go to scratch and are removed.
    bundle_dir = out if role.is_chief else str(work / "bundle")
    model_id = save_bundle(model, vocabulary, config.captioner, bundle_dir)
    if (work / HISTORY_CSV).is_file():
        plot_history(work / HISTORY_CSV, work / HISTORY_PNG)
    summary = {
        "bundle": out if role.is_chief else None,
        "model_id": model_id,
        "task": role.name,
        "weights_fingerprint": fingerprint,
        "epochs_run": len(history.epoch),
        "resumed_from": progress.resumed_from,
        "history": history.history,
        "seconds": round(time.monotonic() - started, 1),
    }
    (work / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    run.close()
    if role.is_chief:
        log.info("wrote bundle %s (model id %s)", out, model_id)
    return TrainResult(
        out if role.is_chief else None,
        model_id,
        {k: [float(v) for v in vs] for k, vs in history.history.items()},
        len(history.epoch),
        progress.resumed_from,
        time.monotonic() - started,
        fingerprint,
        role.is_chief,
    )


def _short_reason(error: Exception, limit: int = 120) -> str:
    """TensorFlow's collective errors lead with an op name in ``{{...}}``; keep the words."""
    text = re.sub(r"\{\{.*?\}\}\s*", "", str(error).strip().splitlines()[0])
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _keep_in_memory(policy: str, cache, training: bool) -> bool:
    if policy in ("memory", "disk"):
        return policy == "memory"
    size = len(cache.images) * math.prod(cache.shape) * np.dtype(cache.dtype).itemsize
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fits = size <= ram // 4
    if training:
        log.info(
            "training examples: %.1f GB, %s",
            size / 1e9,
            "kept in memory" if fits else "streamed from disk every epoch (more than RAM/4)",
        )
    return fits


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 over every weight's shape and values, in the model's own order: equal on
    two workers, or for a model and its reloaded bundle, only if they hold the same
    weights. (Variable paths are left out: the backbone's come from Keras' process-wide
    name counters, so they differ between processes that built other models first.)"""
    digest = hashlib.sha256()
    for value in model.get_weights():
        value = np.ascontiguousarray(value)
        digest.update(f"{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:32]
