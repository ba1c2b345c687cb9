"""DecodeImages: (uri, bytes) -> (uri, model-ready pixels), with the library's one decode path.

By default each image is decoded in a guarded pool of worker processes
(``pipelines.decode_pool``): a decoder that hangs is killed after ``timeout``
seconds, one that crashes takes down only a pool process, and either way the image
becomes an error row (stage ``decode``) while the job goes on. The pool keeps up to
``window`` images in flight, so decoding overlaps with inference downstream. By
default there is one decoder per core the worker may use.

With ``reencode`` (``--right-fit``) each image leaves as a 299 px JPEG rather than
pixels, because it crosses to a GPU worker (``captioning.images.reencode``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from captioning.images.decode import load_image
from captioning.images.reencode import EncodedImage, load_image_as_jpeg
from pipelines.decode_pool import DecodePool
from pipelines.error_rows import describe, error_row
from pipelines.metrics import IMAGES_DECODED, NAMESPACE

ERRORS = "errors"


def _decoded_output(uri: str, decoded) -> tuple[str, dict[str, Any]]:
    size = {"width": decoded.width, "height": decoded.height}
    if isinstance(decoded, EncodedImage):
        return uri, {"jpeg": decoded.jpeg, **size}
    return uri, {"pixels": decoded.pixels, **size}


def _error_output(uri: str, error: BaseException) -> beam.pvalue.TaggedOutput:
    error_type, message = describe(type(error), repr(error))
    Metrics.counter(NAMESPACE, f"errors.decode.{error_type}").inc()
    return beam.pvalue.TaggedOutput(ERRORS, error_row(uri, "decode", error_type, message))


def worker_cores() -> int:
    """The cores this process may run on: its CPU affinity, which containers narrow."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity outside Linux
        return os.cpu_count() or 1


class PooledDecode(beam.DoFn):
    """Decodes in a process pool; outputs (uri, image) and, tagged ``errors``, error rows."""

    def __init__(
        self,
        decode: Callable[[bytes], Any],
        timeout: float,
        processes: int | None = None,
        window: int = 128,
        threads: int = 1,
    ) -> None:
        self.decode = decode
        self.timeout = timeout
        self.processes = processes
        self.window = window
        self.threads = threads

    def setup(self):
        # Decoding is CPU-bound, and on a GPU worker the cores have little else to do
        # while the device runs the model: by default each one gets a decoder (shared
        # out between the ``threads`` copies of this step one SDK process may run).
        processes = self.processes or max(1, worker_cores() // self.threads)
        # At least two images per decoder in flight, so each has its next one queued
        # while the main thread collects results.
        window = max(self.window, 2 * processes)
        self.pool = DecodePool(self.decode, processes, window, self.timeout)

    def _outputs(self, completed):
        for uri, decoded, error in completed:
            if error is not None:
                yield _error_output(uri, error)
            else:
                Metrics.counter(NAMESPACE, IMAGES_DECODED).inc()
                yield _decoded_output(uri, decoded)

    def process(self, element):
        uri, data = element
        yield from self._outputs(self.pool.submit(uri, data))

    def finish_bundle(self):
        # Everything still in flight belongs to this bundle and must leave with it.
        for output in self._outputs(self.pool.drain()):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    output.tag, GlobalWindows.windowed_value(output.value)
                )
            else:
                yield GlobalWindows.windowed_value(output)

    def teardown(self):
        self.pool.close()


class InProcessDecode(beam.DoFn):
    """Decodes in the worker itself: no isolation from a crashing decoder."""

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self.decode = decode

    def process(self, element):
        uri, data = element
        try:
            decoded = self.decode(data)
        except Exception as error:  # noqa: BLE001 - any decode failure is that image's error row
            yield _error_output(uri, error)
            return
        Metrics.counter(NAMESPACE, IMAGES_DECODED).inc()
        yield _decoded_output(uri, decoded)


class DecodeImages(beam.PTransform):
    def __init__(
        self,
        image_size: int,
        max_pixels: int,
        timeout: float = 30.0,
        isolate: bool = True,
        decode: Callable[[bytes], Any] | None = None,
        processes: int | None = None,
        reencode: bool = False,
        threads: int = 1,
    ) -> None:
        super().__init__()
        self.decode = decode or functools.partial(
            load_image_as_jpeg if reencode else load_image,
            image_size=image_size,
            max_pixels=max_pixels,
        )
        self.timeout = timeout
        self.isolate = isolate
        self.processes = processes
        self.threads = threads

    def expand(self, images):
        if self.isolate:
            fn = PooledDecode(self.decode, self.timeout, self.processes, threads=self.threads)
        else:
            fn = InProcessDecode(self.decode)
        decoded = images | "Decode" >> beam.ParDo(fn).with_outputs(ERRORS, main="decoded")
        return {"decoded": decoded.decoded, "errors": decoded[ERRORS]}
