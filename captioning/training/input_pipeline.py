"""tf.data input for training: cached examples -> shuffle, augment, caption, batch, prefetch.

Each element is one image with all its captions, so augmentation changes the
image and (for flips) its captions together; one caption is drawn per image
per epoch. The examples come from ``example_cache`` (decoded once by the same
``load_image`` the caption pipeline uses), so there is no Python in the loop.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from captioning.config import AugmentConfig
from captioning.text.vocabulary import Vocabulary

AUTOTUNE = tf.data.AUTOTUNE


def encode_captions(
    captions_by_image: dict[str, list[str]], names: list[str], vocabulary: Vocabulary
) -> tuple[np.ndarray, np.ndarray]:
    """-> tokens [N, C, T] for ``names`` in order (rows past an image's count are
    padding), and the caption count per image [N]."""
    most = max((len(captions_by_image[name]) for name in names), default=1)
    tokens = np.zeros((len(names), most, vocabulary.max_length), dtype=np.int32)
    counts = np.zeros(len(names), dtype=np.int32)
    for row, name in enumerate(names):
        encoded = vocabulary.encode_batch(captions_by_image[name])
        tokens[row, : len(encoded)] = encoded
        counts[row] = len(encoded)
    return tokens, counts


def left_right_swap_table(vocabulary: Vocabulary) -> np.ndarray:
    """A lookup table that swaps the ids of "left" and "right" (identity elsewhere)."""
    table = np.arange(vocabulary.size, dtype=np.int32)
    if "left" in vocabulary.words and "right" in vocabulary.words:
        left, right = vocabulary.word_id("left"), vocabulary.word_id("right")
        table[left], table[right] = right, left
    return table


def augment(image, captions, config: AugmentConfig, swap_table: np.ndarray):
    """Random crop, brightness and flip of one uint8 image; a flip also mirrors the
    words "left" and "right" in its captions, so the pair stays true."""
    image, captions = tf.convert_to_tensor(image), tf.convert_to_tensor(captions)
    size = image.shape[0]
    if config.crop_fraction < 1.0:
        side = tf.cast(tf.random.uniform([], config.crop_fraction, 1.0) * size, tf.int32)
        image = tf.image.random_crop(image, tf.stack([side, side, 3]))
        image = tf.image.resize(image, [size, size])
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    if config.brightness > 0:
        delta = tf.random.uniform([], -config.brightness, config.brightness) * 255.0
        image = tf.cast(tf.clip_by_value(tf.cast(image, tf.float32) + delta, 0, 255), tf.uint8)
    if config.flip:
        flip = tf.random.uniform([]) < 0.5
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
        captions = tf.cond(flip, lambda: tf.gather(swap_table, captions), lambda: captions)
    return image, captions


def to_model_inputs(inputs_key: str):
    """(x, caption) -> ({inputs_key: x, tokens}, next words, mask) for teacher forcing."""

    def split(x, caption):
        labels = caption[:, 1:]
        weights = tf.cast(tf.not_equal(labels, 0), tf.float32)
        return {inputs_key: x, "tokens": caption[:, :-1]}, labels, weights

    return split


def caption_batches(
    examples: tf.data.Dataset,
    tokens: np.ndarray,
    counts: np.ndarray,
    batch_size: int,
    training: bool,
    inputs_key: str = "images",
    augment_config: AugmentConfig | None = None,
    vocabulary: Vocabulary | None = None,
    in_memory: bool = True,
    seed: int = 0,
    epochs: int | None = None,
) -> tf.data.Dataset:
    """Batches for ``model.fit`` from (row, tensor) examples whose rows index ``tokens``:
    ``epochs`` passes (endless if None); give fit ``steps_per_epoch``/``validation_steps``."""
    if in_memory:
        examples = examples.cache()
    if training:
        examples = examples.shuffle(
            min(len(tokens), 10_000), seed=seed, reshuffle_each_iteration=True
        )
    tokens_table = tf.constant(tokens)
    counts_table = tf.constant(counts)
    swap_table = left_right_swap_table(vocabulary) if vocabulary is not None else None
    do_augment = training and augment_config is not None and inputs_key == "images"

    def prepare(row, value):
        captions = tf.gather(tokens_table, row)
        if do_augment:
            value, captions = augment(value, captions, augment_config, swap_table)
        if training:
            pick = tf.random.uniform([], 0, tf.gather(counts_table, row), dtype=tf.int32)
        else:
            pick = 0
        return value, captions[pick]

    batches = examples.map(prepare, num_parallel_calls=AUTOTUNE)
    batches = batches.batch(batch_size, drop_remainder=training)
    batches = batches.map(to_model_inputs(inputs_key), num_parallel_calls=AUTOTUNE)
    # Epochs are cut by steps_per_epoch, so one iterator serves the whole run instead of
    # a cold pipeline every epoch. A finite count lets that iterator run dry before it
    # is destroyed (tearing down a busy distributed iterator can hang in TF 2.21).
    options = tf.data.Options()
    # Multi-worker runs split batches by element: each worker builds the same pipeline
    # and keeps its share of every global batch. (File sharding, the default, would
    # starve workers when there are fewer cache shards than workers.)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.repeat(epochs).prefetch(AUTOTUNE).with_options(options)
