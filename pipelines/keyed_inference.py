"""Beam's RunInference over (uri, example) pairs, with a batch that fails as error rows.

Both jobs' model stages (``CaptionImages``, ``EncodeImages``) start the same way: a
keyed ``RunInference`` with exception handling, whose failed batches become one
``inference`` error row per image. The steps keep their labels (``RunInference``,
``InferenceErrorRows``) inside the stage that calls this.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from pipelines.error_rows import FailedBatchesToErrorRows


def run_keyed_inference(
    keyed: beam.PCollection, handler: ModelHandler
) -> tuple[beam.PCollection, beam.PCollection]:
    """(uri, example) -> ((uri, PredictionResult) per image, error rows of failed batches)."""
    predictions, failed = (
        keyed | "RunInference" >> RunInference(KeyedModelHandler(handler)).with_exception_handling()
    )
    errors = failed.failed_inferences | "InferenceErrorRows" >> beam.ParDo(
        FailedBatchesToErrorRows()
    )
    return predictions, errors
