"""The captioning task model: encoder + decoder, teacher-forced training, and ``generate``."""

from __future__ import annotations

from typing import Any

import keras

from captioning.config import CaptionerConfig
from captioning.models.attention_gru_decoder import AttentionGRUDecoder
from captioning.models.caption_generation import Generator
from captioning.models.caption_search import SearchResult
from captioning.models.image_encoder import ImageEncoder


@keras.saving.register_keras_serializable(package="captioning")
class Captioner(keras.Model):
    """Images (or cached backbone features) plus caption tokens -> next-word logits.

    Training input is a dict with ``tokens`` [B, T] (the caption without its last
    token) and either ``images`` (uint8 [B, S, S, 3]) or ``features`` (the frozen
    backbone grid [B, L, C] from the feature cache). ``generate`` runs batched greedy
    or beam search in one compiled graph and also returns attention weights.
    """

    def __init__(
        self,
        encoder: ImageEncoder,
        decoder: AttentionGRUDecoder,
        max_length: int,
        start_id: int,
        end_id: int,
        beam_width: int = 3,
        length_penalty: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # === Layers ===
        self.encoder = encoder
        self.decoder = decoder
        # === Config ===
        self.max_length = max_length
        self.start_id = start_id
        self.end_id = end_id
        self.beam_width = beam_width
        self.length_penalty = length_penalty
        self._generate_functions: dict[tuple[int, int, bool, bool], Generator] = {}

    # === Construction ===
    @classmethod
    def from_captioner_config(
        cls,
        config: CaptionerConfig,
        vocabulary_size: int,
        max_length: int,
        start_id: int,
        end_id: int,
        load_backbone_weights: bool = True,
    ) -> Captioner:
        dec = config.decoder
        encoder = ImageEncoder.from_captioner_config(
            config, load_backbone_weights=load_backbone_weights
        )
        decoder = AttentionGRUDecoder(
            vocabulary_size=vocabulary_size,
            embedding_dim=dec.embedding_dim,
            units=dec.units,
            attention_units=dec.attention_units,
            dropout=dec.dropout,
            name="decoder",
        )
        model = cls(
            encoder,
            decoder,
            max_length=max_length,
            start_id=start_id,
            end_id=end_id,
            beam_width=config.generation.beam_width,
            length_penalty=config.generation.length_penalty,
            name="captioner",
        )
        model.build_all()
        return model

    @classmethod
    def for_vocabulary(
        cls, config: CaptionerConfig, vocabulary: Any, load_backbone_weights: bool = True
    ) -> Captioner:
        """A new captioner sized for ``vocabulary`` (a ``captioning.text.Vocabulary``)."""
        return cls.from_captioner_config(
            config,
            vocabulary_size=vocabulary.size,
            max_length=vocabulary.max_length,
            start_id=vocabulary.start_id,
            end_id=vocabulary.end_id,
            load_backbone_weights=load_backbone_weights,
        )

    def build_all(self) -> None:
        """Create every variable now, so weights can be saved, loaded and counted."""
        self.encoder.build()
        self.decoder.build((None, None, self.encoder.projection_dim))
        self.built = True

    def build(self, input_shape=None):
        self.build_all()

    def get_build_config(self):
        return {}

    def build_from_config(self, config):
        self.build_all()

    # === Training ===
    def call(self, inputs, training=False):
        if "features" in inputs:
            features = self.encoder.project(inputs["features"])
        else:
            features = self.encoder(inputs["images"], training=training)
        return self.decoder(features, inputs["tokens"], training=training)

    # === Generation ===
    def generate(
        self,
        images=None,
        *,
        features=None,
        beam_width: int | None = None,
        max_length: int | None = None,
        jit_compile: bool = False,
    ) -> SearchResult:
        """Captions for a batch of uint8 images (or backbone features), best beam first,
        as numpy arrays. ``beam_width`` 1 is greedy search. ``jit_compile`` compiles the
        search with XLA under TensorFlow (JAX always does). Each (beam_width,
        max_length, input kind) compiles once; batches of any size reuse it."""
        beam_width = self.beam_width if beam_width is None else int(beam_width)
        max_length = self.max_length - 1 if max_length is None else int(max_length)
        if beam_width < 1:
            raise ValueError("beam_width must be at least 1")
        from_features = features is not None
        key = (beam_width, max_length, from_features, jit_compile)
        generator = self._generate_functions.get(key)
        if generator is None:
            generator = Generator(self, beam_width, max_length, from_features, jit_compile)
            self._generate_functions[key] = generator
        return generator(features if from_features else images)

    # === Config ===
    def get_config(self):
        # Sub-layer configs are stored in full so a bundle needs no Python beyond
        # these registered classes; the dtype policy is left to whoever loads it,
        # so one bundle can run in float32 or mixed precision.
        return {
            "name": self.name,
            "encoder": _without_dtype(keras.saving.serialize_keras_object(self.encoder)),
            "decoder": _without_dtype(keras.saving.serialize_keras_object(self.decoder)),
            "max_length": self.max_length,
            "start_id": self.start_id,
            "end_id": self.end_id,
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


def _without_dtype(serialized: dict) -> dict:
    serialized = dict(serialized)
    serialized["config"] = {k: v for k, v in serialized["config"].items() if k != "dtype"}
    return serialized
