"""The pixel normalisation step that sits at the front of the encoder."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="captioning")
class ImageNormalization(keras.layers.Layer):
    """uint8 RGB -> float: InceptionV3 ``preprocess_input`` or per-channel mean/std.

    Living inside the model means the bundle carries the normalisation, and training,
    ``predict`` and the Beam pipeline cannot disagree about it.
    """

    def __init__(
        self,
        mode: str = "inception",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # === Config ===
        if mode not in ("inception", "dataset"):
            raise ValueError(f"unknown normalization mode {mode!r}")
        if mode == "dataset" and (mean is None or std is None):
            raise ValueError("mode='dataset' needs mean and std")
        self.mode = mode
        self.mean = None if mean is None else [float(value) for value in mean]
        self.std = None if std is None else [float(value) for value in std]

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "inception":
            # Same arithmetic as keras.applications.inception_v3.preprocess_input.
            return images / 127.5 - 1.0
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "mean": self.mean, "std": self.std})
        return config
