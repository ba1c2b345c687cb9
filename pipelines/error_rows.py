"""Turning failures from any stage into rows of the errors table, and counting them."""

from __future__ import annotations

import datetime
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.metrics import NAMESPACE

_MESSAGE_LIMIT = 2000


def error_row(uri: str, stage: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "image_uri": uri,
        "stage": stage,
        "error_type": error_type,
        "message": message[:_MESSAGE_LIMIT] or error_type,
        "failed_at": datetime.datetime.now(datetime.timezone.utc),
    }


def counted_error_row(uri: str, stage: str, error_type: str, message: str) -> dict[str, Any]:
    """An error row, counted as ``errors.<stage>.<error_type>`` for the run summary."""
    Metrics.counter(NAMESPACE, f"errors.{stage}.{error_type}").inc()
    return error_row(uri, stage, error_type, message)


def describe(exception_type: type, exception_repr: str) -> tuple[str, str]:
    """Name and message for an exception from a dead-letter output.

    Our decode errors carry a short ``error_type`` (e.g. "CorruptImage"); anything
    else is named by its class.
    """
    name = getattr(exception_type, "error_type", None) or exception_type.__name__
    message = exception_repr
    prefix = f"{exception_type.__name__}("
    if message.startswith(prefix) and message.endswith(")"):
        message = message[len(prefix) : -1].strip("'\"")
    return name, message


class DeadLettersToErrorRows(beam.DoFn):
    """(element, (type, repr, traceback)) from ``with_exception_handling`` -> an error row."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def process(self, dead_letter):
        element, (exception_type, exception_repr, _) = dead_letter
        uri = element[0] if isinstance(element, tuple) else str(element)
        error_type, message = describe(exception_type, exception_repr)
        yield counted_error_row(uri, self.stage, error_type, message)


class FailedBatchesToErrorRows(beam.DoFn):
    """RunInference's failed batches, (batch, (type, repr, traceback)) -> one inference
    error row per image in the batch.

    From the caption job only failures outside generation (loading the model, say) get
    here: its handler splits a batch whose generation fails until the failing images
    are alone, and reports those as inferences (``caption_images.ToCaptionRow``).
    """

    def process(self, failed):
        batch, (exception_type, exception_repr, _) = failed
        error_type, message = describe(exception_type, exception_repr)
        for element in batch:
            uri = element[0] if isinstance(element, tuple) else str(element)
            yield counted_error_row(uri, "inference", error_type, message)
