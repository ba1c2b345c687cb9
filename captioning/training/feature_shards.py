"""Feature shards from ``captioning features`` as the trainer's example source.

``open_feature_shards(DIR)`` reads the committed spec (``DIR/features.json``) and then
only what it names: that run's shards and index files, and the errors table at the
version that run committed. Files of a run that is still going, or was killed, are
never listed, so they cannot leak into training. ``cache_for(names)`` then gives
the trainer what ``build_cache("features", ...)`` would: an object with
``images`` (the names that have features) and ``dataset()`` yielding
``(row int32, features float16)``. Shards hold every image of the features run
in the order the workers wrote them, so a record's row is looked up by its name,
and records of other images (the other split) are dropped while streaming.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from captioning import run_layout, storage, tables
from captioning.errors import UserError
from captioning.training.feature_spec import (
    FEATURES_KEY,
    IMAGE_KEY,
    FeatureSpec,
    file_sha256,
    image_name,
    read_spec,
)

log = logging.getLogger("captioning.train")


@dataclass
class FeatureShardCache:
    """The ``ExampleCache`` interface over feature shards, for one list of image names."""

    images: list[str]  # names that have features; a record's row indexes this list
    files: list[str]
    shape: tuple[int, ...]
    dtype: str

    def dataset(self) -> tf.data.Dataset:
        """(row int32, features) for every image in ``images``, read in parallel."""
        shape, dtype = self.shape, tf.as_dtype(self.dtype)
        rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.images, tf.string),
                tf.range(len(self.images), dtype=tf.int32),
            ),
            default_value=-1,
        )
        spec = {
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            FEATURES_KEY: tf.io.FixedLenFeature([], tf.string),
        }

        def parse(record):
            example = tf.io.parse_single_example(record, spec)
            values = tf.reshape(tf.io.decode_raw(example[FEATURES_KEY], dtype), shape)
            return rows.lookup(example[IMAGE_KEY]), values

        files = tf.data.Dataset.from_tensor_slices(self.files)
        records = files.interleave(
            tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        parsed = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        return parsed.filter(lambda row, _: row >= 0)


@dataclass
class FeatureShards:
    features: str  # --features DIR
    spec: FeatureSpec
    files: list[str]
    available: set[str]  # names with a record
    failed: dict[str, str]  # name -> "stage/error_type" of its error row

    def cache_for(self, names: Sequence[str]) -> FeatureShardCache:
        """The examples of ``names``; images that failed in the features run are left out
        (as the trainer's own cache leaves out images it cannot decode)."""
        kept = [name for name in names if name in self.available]
        kept_set = set(kept)
        # A name with a record is kept even if the errors table has a row for it too (a
        # concurrent run's errors that the commit's replace_read kept).
        failed = Counter(
            self.failed[name] for name in names if name in self.failed and name not in kept_set
        )
        unknown = [n for n in names if n not in self.available and n not in self.failed]
        if unknown:
            raise UserError(
                f"--features {self.features}: {len(unknown)} images of these captions are not in "
                f"the features run (e.g. {', '.join(unknown[:3])}); run `captioning features` "
                "with the same --captions"
            )
        if failed:
            log.warning(
                "leaving out %d images that have no features (%s)",
                sum(failed.values()),
                ", ".join(f"{kind}: {count}" for kind, count in sorted(failed.items())),
            )
        if not kept:
            raise UserError(f"--features {self.features}: none of {len(names)} images has features")
        return FeatureShardCache(
            kept, self.files, tuple(self.spec.feature_shape), self.spec.feature_dtype
        )

    def load_backbone(self, backbone: keras.Model) -> None:
        """Give ``backbone`` the weights that computed these features."""
        source = run_layout.backbone_path(self.features, self.spec.run_id)
        if not storage.exists(source):
            raise UserError(f"--features {self.features}: {source} is missing")
        if file_sha256(source) != self.spec.backbone_sha256:
            raise UserError(
                f"--features {self.features}: {source} is not the backbone of run "
                f"{self.spec.run_id}"
            )
        with tempfile.TemporaryDirectory() as local:
            # Keras reads weights files from local disk only.
            staged = str(Path(local) / "backbone.weights.h5")
            storage.copy_file(source, staged)
            backbone.load_weights(staged)


def _read_failed(features: str, spec: FeatureSpec) -> dict[str, str]:
    """name -> "stage/error_type" from the errors table as the spec's run committed it
    (a later run may have committed errors since, then died before its spec)."""
    table = run_layout.errors_table(features)
    if spec.errors_version is None:
        raise UserError(f"--features {features}: the spec names no errors table version")
    try:
        rows = tables.read(
            table, ["image_uri", "stage", "error_type"], at_version=spec.errors_version
        )
    except Exception as error:  # noqa: BLE001 - missing table, or the version is vacuumed
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"--features {features}: cannot read version {spec.errors_version} of {table} "
            f"({first_line}); rerun `captioning features`"
        ) from None
    failed = {}
    for row in rows.to_pylist():
        name = image_name(spec.images, row["image_uri"])
        failed[name] = f"{row['stage']}/{row['error_type']}"
    return failed


def _committed_files(features: str, spec: FeatureSpec) -> tuple[list[str], list[str]]:
    """The shard and index files the spec names, checked to be there."""
    files = [run_layout.join(features, name) for name in spec.shards]
    index = [run_layout.join(features, name) for name in spec.index]
    missing = [path for path in [*files, *index] if not storage.exists(path)]
    if missing:
        raise UserError(
            f"--features {features}: {len(missing)} files of run {spec.run_id} are missing "
            f"(e.g. {missing[0]}); rerun `captioning features`"
        )
    return files, index


def open_feature_shards(features: str) -> FeatureShards:
    """The committed features run of ``--features DIR``."""
    spec = read_spec(features)
    files, index = _committed_files(features, spec)
    available: set[str] = set()
    for path in index:
        available.update(line for line in storage.read_bytes(path).decode().splitlines() if line)
    expected = spec.counts.get("features")
    if expected is not None and expected != len(available):
        raise UserError(
            f"--features {features}: the index of run {spec.run_id} lists {len(available)} "
            f"images, the run wrote {expected}"
        )
    if available and not files:
        raise UserError(
            f"--features {features}: the spec of run {spec.run_id} names no feature shards"
        )
    failed = _read_failed(features, spec)
    log.info(
        "features %s (run %s): %d images with features in %d shards, %d without",
        features,
        spec.run_id,
        len(available),
        len(files),
        len(failed),
    )
    return FeatureShards(features, spec, files, available, failed)
