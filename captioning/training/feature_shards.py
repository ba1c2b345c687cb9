"""Feature shards from ``captioning features`` as the trainer's example source.

``open_feature_shards(PREFIX)`` reads the spec, the list of shards, the index of
images that have features and the errors table; ``cache_for(names)`` then gives
the trainer what ``build_cache("features", ...)`` would: an object with
``images`` (the names that have features) and ``dataset()`` yielding
``(row int32, features float16)``. Shards hold every image of the features run
in the order the workers wrote them, so a record's row is looked up by its name,
and records of other images (the other split) are dropped while streaming.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import pyarrow.parquet as pq
import tensorflow as tf

from captioning.errors import UserError
from captioning.training.feature_spec import (
    FEATURES_KEY,
    IMAGE_KEY,
    FeatureSpec,
    backbone_path,
    errors_glob,
    file_sha256,
    image_name,
    index_prefix,
    read_spec,
    shards_prefix,
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
    prefix: str
    spec: FeatureSpec
    files: list[str]
    available: set[str]  # names with a record
    failed: dict[str, str]  # name -> "stage/error_type" of its error row

    def cache_for(self, names: Sequence[str]) -> FeatureShardCache:
        """The examples of ``names``; images that failed in the features run are left out
        (as the trainer's own cache leaves out images it cannot decode)."""
        kept = [name for name in names if name in self.available]
        failed = Counter(self.failed[name] for name in names if name in self.failed)
        unknown = [n for n in names if n not in self.available and n not in self.failed]
        if unknown:
            raise UserError(
                f"--features {self.prefix}: {len(unknown)} images of these captions are not in "
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
            raise UserError(f"--features {self.prefix}: none of {len(names)} images has features")
        return FeatureShardCache(
            kept, self.files, tuple(self.spec.feature_shape), self.spec.feature_dtype
        )

    def load_backbone(self, backbone: keras.Model) -> None:
        """Give ``backbone`` the weights that computed these features."""
        source = backbone_path(self.prefix)
        if not tf.io.gfile.exists(source):
            raise UserError(f"--features {self.prefix}: {source} is missing")
        if file_sha256(source) != self.spec.backbone_sha256:
            raise UserError(
                f"--features {self.prefix}: {source} is not the backbone of run {self.spec.run_id}"
            )
        with tempfile.TemporaryDirectory() as local:
            # Keras reads weights files from local disk only.
            staged = str(Path(local) / "backbone.weights.h5")
            tf.io.gfile.copy(source, staged)
            backbone.load_weights(staged)


def _read_failed(prefix: str, spec: FeatureSpec) -> dict[str, str]:
    failed = {}
    for path in sorted(tf.io.gfile.glob(errors_glob(prefix, spec.run_id))):
        with tf.io.gfile.GFile(path, "rb") as handle:
            table = pq.read_table(
                io.BytesIO(handle.read()), columns=["image_uri", "stage", "error_type"]
            )
        for row in table.to_pylist():
            name = image_name(spec.images, row["image_uri"])
            failed[name] = f"{row['stage']}/{row['error_type']}"
    return failed


def open_feature_shards(prefix: str) -> FeatureShards:
    spec = read_spec(prefix)
    files = sorted(tf.io.gfile.glob(shards_prefix(prefix, spec.run_id) + "-*.tfrecord"))
    available: set[str] = set()
    for path in sorted(tf.io.gfile.glob(index_prefix(prefix, spec.run_id) + "-*.txt")):
        available.update(line for line in tf.io.gfile.GFile(path).read().splitlines() if line)
    expected = spec.counts.get("features")
    if expected is not None and expected != len(available):
        raise UserError(
            f"--features {prefix}: the index of run {spec.run_id} lists {len(available)} images, "
            f"the run wrote {expected}"
        )
    if available and not files:
        raise UserError(f"--features {prefix}: the feature shards of run {spec.run_id} are missing")
    failed = _read_failed(prefix, spec)
    log.info(
        "features %s (run %s): %d images with features in %d shards, %d without",
        prefix,
        spec.run_id,
        len(available),
        len(files),
        len(failed),
    )
    return FeatureShards(prefix, spec, files, available, failed)
