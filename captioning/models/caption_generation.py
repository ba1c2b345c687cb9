"""Compiled caption generation on any Keras 3 backend.

``generate`` runs as Keras' own predict step of two small wrapper models: one
encodes images (or projects cached backbone features), the other runs the caption
search. Keras then compiles each the way its backend does (``tf.function`` under
TensorFlow, ``jax.jit`` with the weights passed in as state under JAX) and hands back
numpy arrays, so nothing here names a backend's API.

Two models rather than one because the best compiler settings differ: under
TensorFlow on CPU the CNN is fastest on oneDNN kernels without XLA, while the search
loop's many small ops gain from XLA (``jit_compile``). Under JAX both are always
jitted, so one model does both and the features never leave the device.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from captioning.models.caption_search import SearchResult, beam_search, greedy_search


class ImageFeatures(keras.Model):
    """uint8 images [B, S, S, 3] (or backbone features [B, L, C]) -> projected features."""

    def __init__(self, captioner: Any, from_features: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.captioner = captioner
        self.from_features = from_features
        self.built = True

    def call(self, inputs, training=False):
        encoder = self.captioner.encoder
        if self.from_features:
            return encoder.project(ops.cast(inputs, self.captioner.compute_dtype))
        return encoder(inputs, training=False)


class CaptionSearch(keras.Model):
    """Projected features (or, with ``features_model``, its inputs) -> SearchResult fields."""

    def __init__(
        self,
        captioner: Any,
        beam_width: int,
        max_length: int,
        features_model: ImageFeatures | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.captioner = captioner
        self.beam_width = beam_width
        self.search_length = max_length
        self.features_model = features_model
        self.built = True

    def call(self, inputs, training=False):
        captioner = self.captioner
        decoder = captioner.decoder
        features = inputs if self.features_model is None else self.features_model(inputs)
        keys, hidden = decoder.start(features)
        k = self.beam_width
        if k > 1:
            features = ops.repeat(features, k, axis=0)
            keys = ops.repeat(keys, k, axis=0)
            hidden = ops.repeat(hidden, k, axis=0)

        def step(tokens, state):
            return decoder.step(tokens, state, features, keys, training=False)

        grid_size = captioner.encoder.grid_size
        ends = (captioner.start_id, captioner.end_id)
        if k == 1:
            result = greedy_search(step, hidden, grid_size, self.search_length, *ends)
        else:
            result = beam_search(
                step, hidden, grid_size, self.search_length, *ends, k, captioner.length_penalty
            )
        return result.tokens, result.scores, result.lengths, result.attention


def _padded_size(batch: int) -> int:
    """The next power of two (at least 8): under JAX each new batch shape compiles anew,
    so ragged last batches and split retries reuse a handful of compiled sizes."""
    size = 8
    while size < batch:
        size *= 2
    return size


class Generator:
    """One (beam width, length, input kind) of generation, compiled on first use."""

    def __init__(
        self,
        captioner: Any,
        beam_width: int,
        max_length: int,
        from_features: bool,
        jit_compile: bool,
    ) -> None:
        self.on_jax = keras.backend.backend() == "jax"
        features = ImageFeatures(captioner, from_features)
        if self.on_jax:
            self.stages = [CaptionSearch(captioner, beam_width, max_length, features)]
        else:
            features.jit_compile = False
            search = CaptionSearch(captioner, beam_width, max_length)
            search.jit_compile = jit_compile
            self.stages = [features, search]

    def __call__(self, inputs) -> SearchResult:
        inputs = np.asarray(inputs) if not hasattr(inputs, "shape") else inputs
        batch = int(inputs.shape[0])
        if batch == 0:
            raise ValueError("generate needs at least one image")
        if self.on_jax and _padded_size(batch) != batch:
            padding = [(0, _padded_size(batch) - batch)] + [(0, 0)] * (len(inputs.shape) - 1)
            # Images decoded on the GPU are padded there, not copied to the host.
            pad = np.pad if isinstance(inputs, np.ndarray) else ops.pad
            inputs = pad(inputs, padding)
        outputs = inputs
        for stage in self.stages:
            outputs = stage.predict_on_batch(outputs)
        return SearchResult(*(np.asarray(output)[:batch] for output in outputs))
