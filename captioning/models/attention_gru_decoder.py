"""The attention-GRU language model that turns a feature grid into words."""

from __future__ import annotations

import keras
from keras import ops

from captioning.models.bahdanau_attention import BahdanauAttention


@keras.saving.register_keras_serializable(package="captioning")
class AttentionGRUDecoder(keras.layers.Layer):
    """Show-Attend-Tell style decoder: each step attends over the grid, then a GRU step.

    The GRU state starts from a Dense projection of the mean feature, and the word
    logits read both the new state and the attended context ("deep output").
    """

    def __init__(
        self,
        vocabulary_size: int,
        embedding_dim: int = 256,
        units: int = 512,
        attention_units: int = 512,
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # === Layers ===
        self.embedding = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")
        self.attention = BahdanauAttention(attention_units, name="attention")
        self.initial_state = keras.layers.Dense(units, activation="tanh", name="initial_state")
        self.gru_cell = keras.layers.GRUCell(units, name="gru_cell")
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")
        self.logits = keras.layers.Dense(vocabulary_size, name="logits")

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention_units = attention_units
        self.dropout = dropout

    def build(self, feature_shape, token_shape=None):
        feature_dim = feature_shape[-1]
        self.embedding.build((None,))
        self.attention.build((None, None, feature_dim), (None, self.units))
        self.initial_state.build((None, feature_dim))
        self.gru_cell.build((None, self.embedding_dim + feature_dim))
        self.logits.build((None, self.units + feature_dim))
        self.built = True

    def start(self, features):
        """-> (attention keys, initial GRU state) for projected features [B, L, D]."""
        hidden = self.initial_state(ops.mean(features, axis=1))
        return self.attention.keys(features), hidden

    def step(self, tokens, hidden, features, keys, training=False):
        """One word: tokens [N] -> (logits [N, V], new hidden [N, H], attention [N, L])."""
        context, weights = self.attention(features, keys, hidden)
        inputs = ops.concatenate([self.embedding(tokens), context], axis=-1)
        output, states = self.gru_cell(inputs, [hidden], training=training)
        new_hidden = states[0] if isinstance(states, (list, tuple)) else states
        deep = self.dropout_layer(ops.concatenate([output, context], axis=-1), training=training)
        # The vocabulary projection is the biggest matmul of a step, so it runs in the
        # compute dtype (bf16 accumulates in fp32 on AMX and tensor cores); the logits
        # are then cast to float32 so that the softmax stays exact.
        return ops.cast(self.logits(deep), "float32"), new_hidden, weights

    def call(self, features, tokens, training=False):
        """Teacher forcing: tokens [B, T] (starting with <start>) -> logits [B, T, V]."""
        keys, hidden = self.start(features)
        logits = []
        # The caption length is static, so the loop unrolls into one graph
        # (and XLA can fuse across steps); captions are ~20-30 tokens.
        for t in range(tokens.shape[1]):
            step_logits, hidden, _ = self.step(tokens[:, t], hidden, features, keys, training)
            logits.append(step_logits)
        return ops.stack(logits, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "embedding_dim": self.embedding_dim,
                "units": self.units,
                "attention_units": self.attention_units,
                "dropout": self.dropout,
            }
        )
        return config
