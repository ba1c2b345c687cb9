"""Additive (Bahdanau) attention over the image feature grid."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="captioning")
class BahdanauAttention(keras.layers.Layer):
    """score_l = v . tanh(W1 f_l + W2 h); weights = softmax(score); context = sum_l w_l f_l."""

    def __init__(self, units: int = 512, **kwargs) -> None:
        super().__init__(**kwargs)
        # === Layers ===
        self.feature_dense = keras.layers.Dense(units, name="feature_dense")
        self.hidden_dense = keras.layers.Dense(units, name="hidden_dense")
        self.score_dense = keras.layers.Dense(1, name="score_dense")
        # === Config ===
        self.units = units

    def build(self, feature_shape, hidden_shape):
        self.feature_dense.build(feature_shape)
        self.hidden_dense.build(hidden_shape)
        self.score_dense.build((*feature_shape[:-1], self.units))
        self.built = True

    def keys(self, features):
        """W1 f, computed once per image rather than once per generated word."""
        return self.feature_dense(features)

    def call(self, features, keys, hidden):
        """-> (context [B, D], weights [B, L]) for features [B, L, D], hidden [B, H]."""
        query = ops.expand_dims(self.hidden_dense(hidden), 1)
        scores = self.score_dense(ops.tanh(keys + query))[..., 0]
        # Softmax in float32: bf16 scores over 64 cells lose too much precision.
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        context = ops.sum(ops.expand_dims(ops.cast(weights, features.dtype), -1) * features, 1)
        return context, weights

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config
