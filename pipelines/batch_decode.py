"""Decoding the JPEG examples of a batch inside the inference step.

Examples reach the caption model handler in one of two forms:

- ``{"pixels", "width", "height"}``: decoded by the CPU decoder pool (files the GPU
  decoder cannot take, or every file with ``--decode-device cpu``);
- ``{"jpeg", "width", "height"}``: JPEG bytes, decoded here, next to the model. Either
  a JPEG the header probe found fit for the GPU (its size is then unknown, None, until
  decoded) or, with ``--right-fit``, a 299 px JPEG re-encoded on a CPU worker (the
  original size travels with it).

With a GPU decoder the JPEG examples of a batch are decoded in one nvImageCodec call
and resized on the GPU; the ones it refuses, and all of them without one, are decoded
with Pillow here, one at a time. A file neither can decode is that example's decode
error, named as the CPU path names it, so the errors table does not depend on where
an image was decoded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from apache_beam.metrics import Metrics

from captioning.images.decode import ImageDecodeError, load_image
from pipelines.metrics import DECODED_BY_NVIMGCODEC, NAMESPACE

log = logging.getLogger("captioning.pipeline")


@dataclass
class DecodedExample:
    """Pixels (numpy, or a tensor already on the GPU) and the original size, or an error."""

    pixels: Any = None
    width: int = 0
    height: int = 0
    error: tuple[str, str] | None = None  # (error_type, message)


def _with_pillow(example: dict, image_size: int, max_pixels: int) -> DecodedExample:
    try:
        decoded = load_image(example["jpeg"], image_size, max_pixels)
    except ImageDecodeError as error:
        return DecodedExample(error=(error.error_type, str(error)))
    return DecodedExample(
        decoded.pixels,
        example.get("width") or decoded.width,
        example.get("height") or decoded.height,
    )


def _on_gpu(gpu_decoder: Any, jpegs: list[dict], image_size: int) -> list[Any]:
    """The GPU decoder's results for ``jpegs`` (None = hand it to Pillow); all None if
    the batch call itself fails, which then costs speed, not images."""
    if gpu_decoder is None or not jpegs:
        return [None] * len(jpegs)
    try:
        # Pixels stay on the GPU, as backend tensors, for the model that runs there.
        jpeg_bytes = [example["jpeg"] for example in jpegs]
        return list(gpu_decoder.decode_batch(jpeg_bytes, image_size, to_numpy=False))
    except Exception as error:  # noqa: BLE001 - Pillow then decodes the whole batch
        log.warning("GPU JPEG decoding of a batch failed (%s); decoding it with Pillow", error)
        return [None] * len(jpegs)


def decode_examples(
    examples: list[dict], image_size: int, max_pixels: int, gpu_decoder: Any = None
) -> list[DecodedExample]:
    """One DecodedExample per example, in order."""
    results: list[DecodedExample | None] = [None] * len(examples)
    jpeg_positions = [i for i, example in enumerate(examples) if "jpeg" in example]
    jpegs = [examples[i] for i in jpeg_positions]
    for position, example, image in zip(
        jpeg_positions, jpegs, _on_gpu(gpu_decoder, jpegs, image_size), strict=True
    ):
        if image is None:
            results[position] = _with_pillow(example, image_size, max_pixels)
        else:
            Metrics.counter(NAMESPACE, DECODED_BY_NVIMGCODEC).inc()
            results[position] = DecodedExample(
                image.pixels,
                example.get("width") or image.width,
                example.get("height") or image.height,
            )
    for position, example in enumerate(examples):
        if results[position] is None:
            results[position] = DecodedExample(
                example["pixels"], example["width"], example["height"]
            )
    return results
