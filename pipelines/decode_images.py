"""DecodeImages: (uri, bytes) -> (uri, model-ready pixels), with the library's one decode path.

Decoding untrusted files is where a batch job meets corrupt, hostile and
enormous inputs, so each decode is bounded in time and, by default, runs in a
separate process (Beam's ``with_exception_handling(use_subprocess=True,
timeout=...)``): a decoder that hangs is killed after ``timeout`` seconds and one
that crashes takes down only that subprocess, which Beam restarts. Either way the
image becomes an error row (stage ``decode``) and the job goes on.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from captioning.images.decode import load_image
from pipelines.error_rows import DeadLettersToErrorRows
from pipelines.metrics import IMAGES_DECODED, NAMESPACE


class DecodeImage(beam.DoFn):
    def __init__(self, image_size: int, max_pixels: int) -> None:
        self.image_size = image_size
        self.max_pixels = max_pixels

    def process(self, element):
        uri, data = element
        decoded = load_image(data, self.image_size, self.max_pixels)
        Metrics.counter(NAMESPACE, IMAGES_DECODED).inc()
        yield uri, {"pixels": decoded.pixels, "width": decoded.width, "height": decoded.height}


class DecodeImages(beam.PTransform):
    def __init__(
        self,
        image_size: int,
        max_pixels: int,
        timeout: float = 30.0,
        isolate: bool = True,
        decoder: beam.DoFn | None = None,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.isolate = isolate
        self.decoder = decoder or DecodeImage(image_size, max_pixels)

    def expand(self, images):
        decode = beam.ParDo(self.decoder)
        if self.isolate:
            decode = decode.with_exception_handling(use_subprocess=True, timeout=self.timeout)
        else:
            decode = decode.with_exception_handling(timeout=self.timeout)
        good, bad = images | "Decode" >> decode
        errors = bad | "DecodeErrorRows" >> beam.ParDo(DeadLettersToErrorRows("decode"))
        return {"decoded": good, "errors": errors}
