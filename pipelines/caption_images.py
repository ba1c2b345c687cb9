"""CaptionImages: (uri, decoded image) -> caption rows, through Beam's RunInference."""

from __future__ import annotations

import datetime
import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipelines.caption_model_handler import CaptionModelHandler
from pipelines.error_rows import FailedBatchesToErrorRows
from pipelines.metrics import IMAGES_CAPTIONED, NAMESPACE

log = logging.getLogger("captioning.pipeline")


class ToCaptionRow(beam.DoFn):
    """(uri, PredictionResult) -> a captions-table row; logs progress and rate."""

    REPORT_EVERY_SECONDS = 30.0

    def setup(self):
        self.count = 0
        self.started = self.last_report = time.monotonic()

    def process(self, keyed):
        uri, prediction = keyed
        inference = prediction.inference
        Metrics.counter(NAMESPACE, IMAGES_CAPTIONED).inc()
        self.count += 1
        now = time.monotonic()
        if now - self.last_report >= self.REPORT_EVERY_SECONDS:
            self.last_report = now
            log.info(
                "captioned %d images in this worker (%.1f images/s)",
                self.count,
                self.count / (now - self.started),
            )
        yield {
            "image_uri": uri,
            "caption": inference["caption"],
            "score": float(inference["score"]),
            "alternatives": [
                {"caption": caption, "score": float(score)}
                for caption, score in inference["alternatives"]
            ],
            "width": int(prediction.example["width"]),
            "height": int(prediction.example["height"]),
            "model_id": prediction.model_id,
            "captioned_at": datetime.datetime.now(datetime.timezone.utc),
        }


class CaptionImages(beam.PTransform):
    def __init__(self, handler: CaptionModelHandler) -> None:
        super().__init__()
        self.handler = handler

    def expand(self, decoded):
        predictions, failed = (
            decoded
            | "RunInference"
            >> RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        )
        rows = predictions | "CaptionRows" >> beam.ParDo(ToCaptionRow())
        errors = failed.failed_inferences | "InferenceErrorRows" >> beam.ParDo(
            FailedBatchesToErrorRows()
        )
        return {"captions": rows, "errors": errors}
