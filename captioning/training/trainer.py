"""``captioning train``: captions + images in, a model bundle out.

The model and optimizer are built inside ``strategy.scope()``; the global batch
is the per-replica batch times the replica count; Keras scales the loss by the
replica count, so one replica and N replicas on the same global batch take the
same step. Checkpoints (``BackupAndRestore``) make a killed run resume at the
epoch where it stopped.

``train`` is a list of steps, each a function below it, in order: inputs (captions,
vocabulary, feature shards), the run (strategy, worker role, run directory), model,
datasets, callbacks, fit, export. Small dataclasses carry state from one to the next.
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
from captioning.training.example_cache import ExampleCache, build_cache
from captioning.training.feature_shards import (
    FeatureShardCache,
    FeatureShards,
    open_feature_shards,
)
from captioning.training.history import HISTORY_CSV, HISTORY_PNG, plot_history
from captioning.training.progress import ProgressLogger
from captioning.training.run_directory import RunDirectory, SyncRunDirectory
from captioning.training.strategy import (
    WorkerRole,
    make_strategy,
    synchronize_batch_norm,
    worker_role,
)

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
    """Train a captioner on ``captions`` and export it as a bundle at ``out``.

    Examples come from ``images`` (decoded, or encoded by the frozen backbone, into a
    cache that later runs reuse) or from a features run (``--features DIR``). A run
    killed part-way resumes from its checkpoint in ``run_dir`` (default ``out`` +
    ".run"). On a multi-worker cluster every worker calls this; only the chief's run
    directory and bundle are kept.
    """
    started = time.monotonic()
    shards, config = _open_features(features, images, config)
    # Reproducible initial weights (and identical ones on every worker of a cluster).
    keras.utils.set_random_seed(config.seed)
    inputs = _read_inputs(captions, images, format, config, shards)
    run = _start_run(config, strategy_kind, out, run_dir, feature_cache_dir)
    config = _with_dataset_statistics(config, inputs, run)
    (run.work / "train_config.json").write_text(to_json(config))
    (run.work / "vocabulary.json").write_text(inputs.vocabulary.to_json())

    model = _build_model(config, inputs, run)
    datasets = _build_datasets(config, inputs, run, model)
    # The optimizer, too, is built in the scope, so its slots are distributed like the
    # weights. It needs the datasets first: the schedule decays over steps per epoch.
    with dtype_policy(run.precision), run.strategy.scope():
        compile_captioner(model, config, datasets.steps_per_epoch)
    progress, callbacks = _make_callbacks(config, run, datasets.steps_per_epoch)
    history = _fit(model, datasets, config, callbacks, run)
    return _export(model, history, progress, inputs.vocabulary, config, run, out, started)


# === Step: inputs ===
@dataclass
class _Inputs:
    """What the run trains on: each split's captions by image, the vocabulary built from
    the training captions, and where examples come from (images, or feature shards)."""

    train_captions: dict[str, list[str]]
    val_captions: dict[str, list[str]]
    vocabulary: Vocabulary
    image_dir: Path | None
    shards: FeatureShards | None


def _open_features(
    features: str | None, images: str | None, config: TrainConfig
) -> tuple[FeatureShards | None, TrainConfig]:
    """The features run's shards (None without ``--features``), and ``config`` with the
    image and backbone settings those features were made with."""
    # Precomputed features (``captioning features``) replace the backbone pass; the
    # images directory is then optional, and only filters captions of missing files.
    shards = open_feature_shards(features) if features else None
    if shards is None and images is None:
        raise UserError("give the images directory, or --features DIR")
    if shards is not None:
        if config.captioner.encoder.trainable:
            raise UserError("--features trains from frozen-backbone features; freeze the backbone")
        config = dataclasses.replace(config, captioner=shards.spec.apply_to(config.captioner))
    return shards, config


def _read_inputs(
    captions: str,
    images: str | None,
    format: str | None,
    config: TrainConfig,
    shards: FeatureShards | None,
) -> _Inputs:
    """The captions, split into training and validation, and the vocabulary."""
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
    image_dir = Path(images) if images is not None else None
    return _Inputs(train_captions, val_captions, vocabulary, image_dir, shards)


# === Step: the run (strategy, worker role, run directory) ===
@dataclass
class _Run:
    """This process's place in the run: the strategy, which worker it is, and where it
    writes (the run directory's local copy, and the example cache)."""

    strategy: tf.distribute.Strategy
    role: WorkerRole
    directory: RunDirectory
    precision: str
    global_batch: int
    cache_root: Path

    @property
    def work(self) -> Path:
        return self.directory.local

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def multi_worker(self) -> bool:
        return self.role.task_type is not None


def _start_run(
    config: TrainConfig,
    strategy_kind: str,
    out: str,
    run_dir: str | None,
    feature_cache_dir: str | None,
) -> _Run:
    """The strategy (``strategy_kind``, or chosen from TF_CONFIG and the devices), this
    worker's role, and its run directory (restored from gs:// when the run is remote)."""
    strategy = make_strategy(strategy_kind)
    role = worker_role(strategy)
    # Only the chief writes the run directory and the bundle; other workers of a
    # multi-worker run write their own files to a scratch directory removed at the end.
    directory = RunDirectory(run_dir or f"{out.rstrip('/')}.run", role)
    replicas = strategy.num_replicas_in_sync
    precision = resolve_precision(config.precision)
    log.info(
        "strategy %s: %d replica(s), %s, precision %s",
        type(strategy).__name__,
        replicas,
        role.name,
        precision,
    )
    cache_root = Path(feature_cache_dir or directory.local / "cache")
    if feature_cache_dir and not role.is_chief:
        cache_root = cache_root / role.name
    global_batch = config.batch_size * replicas
    return _Run(strategy, role, directory, precision, global_batch, cache_root)


def _with_dataset_statistics(config: TrainConfig, inputs: _Inputs, run: _Run) -> TrainConfig:
    """``config`` with the training images' mean and std filled in, when its
    normalisation is "dataset" and they are not given."""
    image = config.captioner.image
    if image.normalization != "dataset" or image.mean is not None:
        return config
    names = list(inputs.train_captions)
    pixels = build_cache("pixels", inputs.image_dir, names, config.captioner, run.cache_root)
    mean, std = _dataset_statistics(pixels.dataset())
    image = dataclasses.replace(image, mean=tuple(mean), std=tuple(std))
    log.info("dataset normalisation: mean %s std %s", np.round(mean, 1), np.round(std, 1))
    return dataclasses.replace(config, captioner=dataclasses.replace(config.captioner, image=image))


# === Step: model ===
def _build_model(config: TrainConfig, inputs: _Inputs, run: _Run) -> Captioner:
    # Inside the scope, so a MirroredStrategy or MultiWorker run mirrors the variables.
    with dtype_policy(run.precision), run.strategy.scope():
        model = build_captioner(
            config.captioner, inputs.vocabulary, load_backbone_weights=inputs.shards is None
        )
        if inputs.shards is not None:
            # The backbone that computed the features, so the bundle captions consistently.
            inputs.shards.load_backbone(model.encoder.backbone)
    if _syncs_batch_norm(config, run):
        layers = synchronize_batch_norm(model.encoder.backbone)
        log.info("batch normalisation over the global batch in %d backbone layers", layers)
    return model


def _syncs_batch_norm(config: TrainConfig, run: _Run) -> bool:
    """Whether a trainable backbone's batch norm runs over the global batch while training."""
    return run.replicas > 1 and config.captioner.encoder.trainable


# === Step: datasets ===
@dataclass
class _Datasets:
    """The two splits' batches, and how many steps make one pass over each."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    steps_per_epoch: int
    validation_steps: int


def _build_datasets(config: TrainConfig, inputs: _Inputs, run: _Run, model: Captioner) -> _Datasets:
    """Batched training and validation examples, sized to the epochs still to run."""
    # Epochs still to run: a resumed run's datasets are sized to what is left.
    remaining = config.epochs - completed_epochs(str(run.directory.checkpoint_dir))
    train_cache = _example_cache(list(inputs.train_captions), config, inputs, run, model)
    train_ds = _caption_batches(
        train_cache, inputs.train_captions, True, config, inputs, run, remaining
    )
    val_cache = _example_cache(list(inputs.val_captions), config, inputs, run, model)
    val_ds = _caption_batches(val_cache, inputs.val_captions, False, config, inputs, run, remaining)
    train_size = len(train_cache.images)
    if train_size < run.global_batch:
        raise UserError(
            f"{train_size} training images is fewer than one global batch of {run.global_batch}; "
            "lower --batch-size"
        )
    return _Datasets(
        train_ds,
        val_ds,
        steps_per_epoch=train_size // run.global_batch,
        validation_steps=math.ceil(len(val_cache.images) / run.global_batch),
    )


def _example_cache(
    names: list[str], config: TrainConfig, inputs: _Inputs, run: _Run, model: Captioner
) -> ExampleCache | FeatureShardCache:
    """The examples of ``names``: from the feature shards, else from a cache of the frozen
    backbone's features or of pixels (built on first use, reused by later runs)."""
    if inputs.shards is not None:
        return inputs.shards.cache_for(names)
    if config.captioner.encoder.trainable:
        kind, encode = "pixels", None
    else:
        kind = "features"

        def encode(batch):
            return model.encoder.backbone_features(batch, training=False)

    return build_cache(kind, inputs.image_dir, names, config.captioner, run.cache_root, encode)


def _caption_batches(
    cache: ExampleCache | FeatureShardCache,
    captions_by_image: dict[str, list[str]],
    training: bool,
    config: TrainConfig,
    inputs: _Inputs,
    run: _Run,
    remaining: int,
) -> tf.data.Dataset:
    """One split's batches for ``fit``; ``training`` shuffles them (and augments pixels)."""
    tokens, counts = input_pipeline.encode_captions(
        captions_by_image, cache.images, inputs.vocabulary
    )
    return input_pipeline.caption_batches(
        cache.dataset(),
        tokens,
        counts,
        run.global_batch,
        training,
        inputs_key="images" if config.captioner.encoder.trainable else "features",
        augment_config=config.augment,
        vocabulary=inputs.vocabulary,
        in_memory=_keep_in_memory(config.image_cache, cache, training),
        seed=config.seed,
        # The training iterator lives for the whole run. With one replica Keras
        # restarts the validation iterator every epoch, so it gets one pass that
        # runs dry; a distributed iterator is kept across epochs, so it repeats.
        epochs=max(remaining, 1) if training else (None if run.replicas > 1 else 1),
    )


# === Step: callbacks ===
def _make_callbacks(
    config: TrainConfig, run: _Run, steps_per_epoch: int
) -> tuple[ProgressLogger, list[keras.callbacks.Callback]]:
    """The progress logger (the run summary reads where it resumed from) and every
    callback for ``fit``, in the order they must run."""
    progress = ProgressLogger(config.epochs, steps_per_epoch, run.global_batch, run.work)
    callbacks = [
        # The per-epoch checkpoint: weights, optimizer state and epoch. First, so it is
        # restored before anything else looks. Every worker restores it; the chief writes.
        SharedBackupAndRestore(str(run.directory.checkpoint_dir), is_chief=run.role.is_chief),
        keras.callbacks.TensorBoard(str(run.work / "tensorboard"), update_freq=50),
        # Appends, so a resumed run extends the curves of the run it resumes.
        keras.callbacks.CSVLogger(str(run.work / HISTORY_CSV), append=True),
        progress,
        # Last, so a gs:// run uploads the checkpoint and logs this epoch just wrote.
        SyncRunDirectory(run.directory),
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
    return progress, callbacks


# === Step: fit ===
def _fit(
    model: Captioner,
    datasets: _Datasets,
    config: TrainConfig,
    callbacks: list[keras.callbacks.Callback],
    run: _Run,
) -> keras.callbacks.History:
    """``model.fit``; a multi-worker run that loses a peer stops with ``WorkerLostError``."""
    try:
        return model.fit(
            datasets.train,
            validation_data=datasets.val,
            epochs=config.epochs,
            steps_per_epoch=datasets.steps_per_epoch,
            validation_steps=datasets.validation_steps,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,  # the dataset shuffles itself; this only silences Keras' warning
        )
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        if not run.multi_worker:
            raise
        # A peer was preempted or crashed: collectives cannot finish without it. Every
        # worker stops; a restarted job resumes from the chief's last checkpoint.
        done = completed_epochs(str(run.directory.checkpoint_dir))
        run.directory.close()
        raise WorkerLostError(
            f"{run.role.name} lost contact with the cluster ({_short_reason(error)}); restart "
            f"the job to resume from the checkpoint after epoch {done}"
        ) from None


# === Step: export ===
def _export(
    model: Captioner,
    history: keras.callbacks.History,
    progress: ProgressLogger,
    vocabulary: Vocabulary,
    config: TrainConfig,
    run: _Run,
    out: str,
    started: float,
) -> TrainResult:
    """Save the bundle (the chief's at ``out``), the history plot and the run summary,
    then sync and close the run directory."""
    if _syncs_batch_norm(config, run):
        # The bundle is for inference on any number of devices.
        synchronize_batch_norm(model.encoder.backbone, enabled=False)
    fingerprint = weights_fingerprint(model)
    is_chief, work = run.role.is_chief, run.work
    # Every worker saves (saving may read distributed variables collectively), but only
    # the chief's copy is the bundle; the others go to scratch and are removed.
    bundle_dir = out if is_chief else str(work / "bundle")
    model_id = save_bundle(model, vocabulary, config.captioner, bundle_dir)
    if (work / HISTORY_CSV).is_file():
        plot_history(work / HISTORY_CSV, work / HISTORY_PNG)
    summary = {
        "bundle": out if is_chief else None,
        "model_id": model_id,
        "task": run.role.name,
        "weights_fingerprint": fingerprint,
        "epochs_run": len(history.epoch),
        "resumed_from": progress.resumed_from,
        "history": history.history,
        "seconds": round(time.monotonic() - started, 1),
    }
    (work / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    run.directory.close()
    if is_chief:
        log.info("wrote bundle %s (model id %s)", out, model_id)
    return TrainResult(
        out if is_chief else None,
        model_id,
        {k: [float(v) for v in vs] for k, vs in history.history.items()},
        len(history.epoch),
        progress.resumed_from,
        time.monotonic() - started,
        fingerprint,
        is_chief,
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
