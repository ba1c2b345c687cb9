"""RouteImages: which images the GPU decodes and which go to Pillow on the CPU.

A header probe (no pixels decoded) sends each (uri, bytes) one of two ways:

- ``jpeg``: a JPEG the GPU decoder takes (baseline, RGB or grey, upright, not too
  large). It stays JPEG bytes, ``{"jpeg", "width": None, "height": None}``, all the way
  to the inference step, which decodes a batch of them at once on the GPU;
- ``other``: everything else (PNG, GIF, WebP, CMYK or progressive JPEGs, EXIF-rotated
  photos, files that are not images at all), for the CPU decoder pool. Its errors are
  the errors table's usual decode rows.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from captioning.images.jpeg_probe import gpu_friendly_jpeg
from pipelines.metrics import NAMESPACE, ROUTED_TO_GPU

JPEG = "jpeg"
OTHER = "other"


class RouteByFormat(beam.DoFn):
    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels

    def process(self, element):
        uri, data = element
        if gpu_friendly_jpeg(data, self.max_pixels):
            Metrics.counter(NAMESPACE, ROUTED_TO_GPU).inc()
            yield uri, {"jpeg": data, "width": None, "height": None}
        else:
            yield beam.pvalue.TaggedOutput(OTHER, element)


class RouteImages(beam.PTransform):
    """(uri, bytes) -> {"jpeg": (uri, JPEG example), "other": (uri, bytes)}."""

    def __init__(self, max_pixels: int) -> None:
        super().__init__()
        self.max_pixels = max_pixels

    def expand(self, images):
        routed = images | "Probe" >> beam.ParDo(RouteByFormat(self.max_pixels)).with_outputs(
            OTHER, main=JPEG
        )
        return {JPEG: routed[JPEG], OTHER: routed[OTHER]}
