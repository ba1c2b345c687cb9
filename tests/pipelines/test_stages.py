"""Single stages under a real TestPipeline: decode isolation, inference failures, manifests."""

from __future__ import annotations

import os
import time

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from captioning.images.decode import load_image
from pipelines.caption_images import CaptionImages
from pipelines.caption_model_handler import CaptionModelHandler
from pipelines.decode_images import DecodeImages
from tests.images import awkward_files


def misbehaving_decode(data: bytes):
    """Hangs or kills its own process for chosen inputs, like a decoder bug would."""
    if data.startswith(b"hang"):
        time.sleep(600)
    if data.startswith(b"crash"):
        os._exit(11)
    return load_image(data, 75, 10_000_000)


def test_a_hanging_or_crashing_decoder_costs_one_error_row_each():
    good = awkward_files.png()
    elements = [
        ("a.png", good),
        ("hang.png", b"hang"),
        ("b.png", good),
        ("crash.png", b"crash"),
        ("c.png", good),
        ("d.png", awkward_files.html_as_jpg()),
    ]
    with TestPipeline() as pipeline:
        decoded = (
            pipeline
            | beam.Create(elements)
            | DecodeImages(75, 10_000_000, timeout=5, decode=misbehaving_decode, processes=2)
        )
        assert_that(
            decoded["decoded"] | "Uris" >> beam.Map(lambda kv: kv[0]),
            equal_to(["a.png", "b.png", "c.png"]),
            label="Good",
        )
        assert_that(
            decoded["errors"] | "Kinds" >> beam.Map(lambda r: (r["image_uri"], r["error_type"])),
            equal_to(
                [
                    ("hang.png", "DecodeTimeout"),
                    ("crash.png", "DecoderCrashed"),
                    ("d.png", "UnidentifiedImage"),
                ]
            ),
            label="Errors",
        )


class FailingHandler(CaptionModelHandler):
    """Fails outside generation (which the handler would narrow down by splitting the
    batch), so the whole batch goes to RunInference's dead-letter output."""

    def run_inference(self, batch, model, inference_args=None):
        if any(example["width"] == 13 for example in batch):
            raise RuntimeError("device out of memory")
        yield from super().run_inference(batch, model, inference_args)


def test_an_inference_failure_becomes_error_rows_for_its_batch(tiny_bundle):
    pixels = np.zeros((75, 75, 3), np.uint8)
    good = [(f"ok{i}", {"pixels": pixels, "width": 10, "height": 10}) for i in range(3)]
    bad = [("bad", {"pixels": pixels, "width": 13, "height": 10})]
    handler = FailingHandler(tiny_bundle, min_batch_size=1, max_batch_size=1)
    with TestPipeline() as pipeline:
        out = pipeline | beam.Create(good + bad) | CaptionImages(handler)
        assert_that(
            out["captions"] | "Uris" >> beam.Map(lambda r: r["image_uri"]),
            equal_to(["ok0", "ok1", "ok2"]),
            label="Captions",
        )
        assert_that(
            out["errors"]
            | "Kinds"
            >> beam.Map(lambda r: (r["image_uri"], r["stage"], r["error_type"], r["message"])),
            equal_to([("bad", "inference", "RuntimeError", "device out of memory")]),
            label="Errors",
        )
