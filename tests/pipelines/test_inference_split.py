"""One bad image in a batch costs one error row: the handler splits a failing batch."""

from __future__ import annotations

import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.caption_images import CaptionImages
from pipelines.caption_model_handler import CaptionModelHandler
from pipelines.metrics import IMAGES_CAPTIONED, NAMESPACE


def test_one_poisoned_image_costs_one_error_row_not_its_batch(tiny_bundle, caplog):
    good = np.zeros((75, 75, 3), np.uint8)
    # A genuinely bad input, not a mock: four channels where the model takes three.
    # It breaks np.stack for any batch it is in, and the first convolution when alone
    # (TensorFlow names that an InvalidArgumentError).
    poisoned = np.zeros((75, 75, 4), np.uint8)
    elements = [(f"ok{i}", {"pixels": good, "width": 10, "height": 10}) for i in range(7)]
    elements.insert(5, ("poisoned", {"pixels": poisoned, "width": 10, "height": 10}))
    handler = CaptionModelHandler(tiny_bundle, min_batch_size=8, max_batch_size=8)
    pipeline = TestPipeline()
    out = pipeline | beam.Create(elements) | CaptionImages(handler)
    assert_that(
        out["captions"] | "Uris" >> beam.Map(lambda r: r["image_uri"]),
        equal_to([f"ok{i}" for i in range(7)]),
        label="Captions",
    )
    assert_that(
        out["errors"]
        | "Kinds" >> beam.Map(lambda r: (r["image_uri"], r["stage"], r["error_type"])),
        equal_to([("poisoned", "inference", "InvalidArgumentError")]),
        label="Errors",
    )
    with caplog.at_level(logging.WARNING, logger="captioning.pipeline"):
        result = pipeline.run()
        result.wait_until_finish()

    def counter(name: str) -> int:
        query = MetricsFilter().with_namespace(NAMESPACE).with_name(name)
        return sum(c.committed for c in result.metrics().query(query)["counters"])

    assert counter("errors.inference.InvalidArgumentError") == 1
    assert counter(IMAGES_CAPTIONED) == 7
    # All eight went to the model together, and were narrowed down 8 -> 4 -> 2 -> 1.
    splits = [r.getMessage() for r in caplog.records if "retrying it as" in r.getMessage()]
    assert [message.split(" failed")[0] for message in splits] == [
        "captioning a batch of 8",
        "captioning a batch of 4",
        "captioning a batch of 2",
    ]
