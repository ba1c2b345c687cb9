"""Decode (or encode) each training image once, into TFRecord shards that tf.data streams.

Two kinds of cache, one format:

- ``pixels``: the uint8 model input, decoded by the shared Pillow path. Used when
  the backbone trains, so later epochs skip JPEG/PNG decoding entirely.
- ``features``: the frozen backbone's feature grid (float16). Used when the
  backbone is frozen, so training never runs InceptionV3 again.

Decoding runs in a thread pool (Pillow releases the GIL); reading is plain
TFRecord I/O, so the training input has no Python in it and streams archives
larger than RAM. The cache key covers everything that changes the stored
numbers (image list, image settings, backbone cut and weights identity), so a
second run over the same data reuses it. Images that fail to decode are logged
and left out, with their captions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from captioning.config import CaptionerConfig, to_json
from captioning.images.decode import ImageDecodeError, load_image
from captioning.models.image_encoder import FEATURE_DTYPE

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
SHARD_SIZE = 1024


@dataclass
class ExampleCache:
    """Shards holding one record per kept image: its row in ``images`` and its tensor."""

    directory: Path
    images: list[str]  # kept image names; a record's "row" indexes this list
    files: list[str]
    shape: tuple[int, ...]
    dtype: str

    def dataset(self) -> tf.data.Dataset:
        """(row int32, tensor) per image, read in parallel."""
        shape, dtype = self.shape, tf.as_dtype(self.dtype)
        spec = {
            "row": tf.io.FixedLenFeature([], tf.int64),
            "value": tf.io.FixedLenFeature([], tf.string),
        }

        def parse(record):
            example = tf.io.parse_single_example(record, spec)
            value = tf.reshape(tf.io.decode_raw(example["value"], dtype), shape)
            return tf.cast(example["row"], tf.int32), value

        files = tf.data.Dataset.from_tensor_slices(self.files)
        records = files.interleave(
            tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def weights_identity(weights: str | None) -> str:
    """What the backbone weights are, for cache keys and feature specs: the file's hash
    when they come from a file, so a changed file is a different backbone."""
    if weights is None or weights == "imagenet":
        return str(weights)
    return "file:" + hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def cache_key(kind: str, image_paths: Sequence[str], config: CaptionerConfig) -> str:
    digest = hashlib.sha256(kind.encode())
    digest.update(to_json(config.image).encode())
    if kind == "features":
        digest.update(config.encoder.feature_layer.encode())
        digest.update(weights_identity(config.encoder.backbone_weights).encode())
    for path in image_paths:
        digest.update(path.encode() + b"\0")
    return f"{kind}-{digest.hexdigest()[:20]}"


def _record(row: int, value: np.ndarray) -> bytes:
    feature = {
        "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
        "value": tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.tobytes()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def build_cache(
    kind: str,
    image_dir: Path,
    images: Sequence[str],
    config: CaptionerConfig,
    cache_root: Path,
    encode: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 32,
) -> ExampleCache:
    """Return the cache for ``images``, building it first if no earlier run did.

    ``encode`` maps a uint8 batch to what is stored (the backbone, for features);
    without it the pixels themselves are stored.
    """
    paths = [str(image_dir / name) for name in images]
    directory = cache_root / cache_key(kind, paths, config)
    index_file = directory / INDEX_FILE
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        log.info("%s cache hit: %s (%d images)", kind, directory, len(index["images"]))
        return ExampleCache(
            directory, index["images"], index["files"], tuple(index["shape"]), index["dtype"]
        )
    directory.mkdir(parents=True, exist_ok=True)
    log.info("computing %s for %d images into %s", kind, len(images), directory)
    size, max_pixels = config.image.image_size, config.image.max_pixels

    def decode(name: str):
        try:
            return name, load_image((image_dir / name).read_bytes(), size, max_pixels).pixels
        except (OSError, ImageDecodeError) as error:
            log.warning("skipping training image %s: %s", name, error)
            return name, None

    kept: list[str] = []
    files: list[str] = []
    shape, dtype = None, None
    writer = None
    started = last_report = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(images), batch_size):
            decoded = [
                item
                for item in pool.map(decode, images[start : start + batch_size])
                if item[1] is not None
            ]
            if not decoded:
                continue
            batch = np.stack([pixels for _, pixels in decoded])
            values = np.asarray(encode(batch)).astype(FEATURE_DTYPE) if encode else batch
            shape, dtype = values.shape[1:], values.dtype.name
            for (name, _), value in zip(decoded, values, strict=True):
                if len(kept) % SHARD_SIZE == 0:
                    if writer is not None:
                        writer.close()
                    files.append(str(directory / f"shard-{len(files):05d}.tfrecord"))
                    writer = tf.io.TFRecordWriter(files[-1])
                writer.write(_record(len(kept), value))
                kept.append(name)
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                rate = len(kept) / (last_report - started)
                log.info("%s: %d/%d images (%.1f images/s)", kind, len(kept), len(images), rate)
    if writer is not None:
        writer.close()
    if not kept:
        raise ValueError(f"none of the {len(images)} images could be decoded")
    index = {"images": kept, "files": files, "shape": list(shape), "dtype": dtype}
    # Written last: a run killed half-way leaves no index, so the next run rebuilds.
    index_file.write_text(json.dumps(index))
    return ExampleCache(directory, kept, files, tuple(shape), dtype)
