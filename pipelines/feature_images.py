"""EncodeImages: (uri, decoded image) -> (uri, float16 features), through Beam's RunInference."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.feature_model_handler import FeatureModelHandler
from pipelines.keyed_inference import run_keyed_inference
from pipelines.metrics import NAMESPACE

IMAGES_ENCODED = "images_encoded"


def _count_encoded(keyed):
    uri, prediction = keyed
    Metrics.counter(NAMESPACE, IMAGES_ENCODED).inc()
    return uri, prediction.inference


class EncodeImages(beam.PTransform):
    """Outputs ``features`` ((uri, array) per image) and ``errors`` (inference error rows)."""

    def __init__(self, handler: FeatureModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, decoded):
        predictions, errors = run_keyed_inference(decoded, self.handler)
        features = predictions | "TakeFeatures" >> beam.Map(_count_encoded)
        return {"features": features, "errors": errors}
