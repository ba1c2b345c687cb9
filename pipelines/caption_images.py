"""CaptionImages: (uri, decoded image) -> caption rows, through Beam's RunInference.

Outputs ``captions`` and ``errors``: error rows for images whose generation failed
even alone (the handler narrows a failing batch down to them) or whose JPEG bytes
could not be decoded next to the model, and, from RunInference's
dead-letter output, for every image of a batch that failed any other way.
"""

from __future__ import annotations

import datetime
import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.caption_model_handler import CaptionModelHandler, inference_error
from pipelines.error_rows import counted_error_row
from pipelines.keyed_inference import run_keyed_inference
from pipelines.metrics import IMAGES_CAPTIONED, NAMESPACE

log = logging.getLogger("captioning.pipeline")

ERRORS = "errors"


class ToCaptionRow(beam.DoFn):
    """(uri, PredictionResult) -> a captions-table row, or, tagged ``errors``, an
    inference error row for an example that failed; logs progress and rate."""

    REPORT_EVERY_SECONDS = 30.0

    def setup(self):
        self.count = 0
        self.started = self.last_report = time.monotonic()

    def process(self, keyed):
        uri, prediction = keyed
        failure = inference_error(prediction)
        if failure is not None:
            yield beam.pvalue.TaggedOutput(ERRORS, counted_error_row(uri, *failure))
            return
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
        predictions, failed_batches = run_keyed_inference(decoded, self.handler)
        rows = predictions | "CaptionRows" >> beam.ParDo(ToCaptionRow()).with_outputs(
            ERRORS, main="captions"
        )
        errors = (rows[ERRORS], failed_batches) | "InferenceErrors" >> beam.Flatten()
        return {"captions": rows.captions, "errors": errors}
