"""FeatureModelHandler: Beam's RunInference contract around the frozen image backbone.

Every worker builds the encoder the trainer would build for the same config and
loads the one backbone weights file the launcher saved for the run
(``DIR/backbone-<run>.weights.h5``), so all workers, and later the trainer and its
bundle, share one backbone even when it is randomly initialised.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from captioning import storage
from captioning.config import CaptionerConfig
from captioning.models.image_encoder import FEATURE_DTYPE, ImageEncoder
from captioning.precision import dtype_policy
from captioning.training.feature_spec import build_feature_encoder


class FeatureModelHandler(ModelHandler[dict, PredictionResult, ImageEncoder]):
    """Examples are decoded images ``{"pixels", "width", "height"}``; inferences are the
    backbone's flattened feature grid [L, C] as float16 (what the trainer's cache stores)."""

    def __init__(
        self,
        config: CaptionerConfig,
        backbone_weights_uri: str,
        precision: str = "float32",
        min_batch_size: int = 8,
        max_batch_size: int = 64,
    ) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.config = config
        self.backbone_weights_uri = backbone_weights_uri
        self.precision = precision

    def load_model(self) -> ImageEncoder:
        with dtype_policy(self.precision):
            encoder = build_feature_encoder(self.config, load_backbone_weights=False)
        with tempfile.TemporaryDirectory() as local:
            # Keras reads weights files from local disk only.
            staged = str(Path(local) / "backbone.weights.h5")
            storage.copy_file(self.backbone_weights_uri, staged)
            encoder.backbone.load_weights(staged)
        return encoder

    def run_inference(
        self,
        batch: Sequence[dict],
        model: ImageEncoder,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        pixels = np.stack([example["pixels"] for example in batch])
        # The same call, and the same cast, as the trainer's feature cache.
        features = np.asarray(model.backbone_features(pixels, training=False)).astype(FEATURE_DTYPE)
        for example, values in zip(batch, features, strict=True):
            yield PredictionResult(
                example={"width": example["width"], "height": example["height"]},
                inference=values,
            )

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(example["pixels"].nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return "captioning_features"
