"""CaptionModelHandler: Beam's RunInference contract around a captioning model bundle.

Beam owns the rest: ``BatchElements`` sizes the batches, the shared-model manager
loads the bundle once per worker process (or once per machine with
``share_model_across_processes``, for GPU workers), and RunInference's dead-letter
output turns a failure outside generation (e.g. loading the model) into error rows.

Examples are pixels decoded upstream, or JPEG bytes decoded here, on the GPU when
there is one (``pipelines.batch_decode``). A batch whose generation fails is split in
halves and retried, down to single examples, so one bad image costs one error row
rather than its whole batch. An example that fails alone, or whose JPEG cannot be
decoded, comes out as a PredictionResult whose inference is
``{"stage", "error_type", "message"}`` (see ``inference_error``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from captioning.bundle import LoadedBundle, load_bundle
from captioning.inference import decode_results
from pipelines.batch_decode import DecodedExample, decode_examples
from pipelines.bundle_staging import stage_bundle

log = logging.getLogger("captioning.pipeline")

NVIMGCODEC_BACKENDS = "CAPTIONING_NVIMGCODEC_BACKENDS"


def inference_error(prediction: PredictionResult) -> tuple[str, str, str] | None:
    """(stage, error_type, message) when this example failed, else None: stage
    ``decode`` for a JPEG that could not be decoded, ``inference`` for generation."""
    inference = prediction.inference
    if isinstance(inference, dict) and "error_type" in inference:
        return inference["stage"], inference["error_type"], inference["message"]
    return None


def _failure(stage: str, error_type: str, message: str) -> dict[str, str]:
    return {"stage": stage, "error_type": error_type, "message": message}


def _stack(pixels: list) -> Any:
    """One batch: numpy stays on the host; anything else (GPU-decoded tensors) is stacked
    by the backend, on the device it is on."""
    if all(isinstance(image, np.ndarray) for image in pixels):
        return np.stack(pixels)
    from keras import ops

    return ops.stack([ops.convert_to_tensor(image) for image in pixels])


class CaptionModelHandler(ModelHandler[dict, PredictionResult, LoadedBundle]):
    """Examples are decoded images ``{"pixels", "width", "height"}`` or JPEG bytes
    ``{"jpeg", "width", "height"}``; inferences are ``{"caption", "score",
    "alternatives"}``. Wrap in ``KeyedModelHandler`` to key by URI.

    ``decode_device`` "gpu" decodes the JPEG examples with nvImageCodec (Pillow for
    what it refuses); ``accelerator`` is the resource hint of a right-fitted job, which
    RunInference puts on its inference step alone."""

    def __init__(
        self,
        model_uri: str,
        beam_width: int | None = None,
        precision: str = "float32",
        min_batch_size: int = 8,
        max_batch_size: int = 64,
        share_across_processes: bool = False,
        model_copies: int | None = None,
        jit_compile: bool = False,
        expected_model_id: str | None = None,
        decode_device: str = "cpu",
        accelerator: str | None = None,
    ) -> None:
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            large_model=share_across_processes,
            model_copies=model_copies,
        )
        self.model_uri = model_uri
        self.beam_width = beam_width
        self.precision = precision
        self._share = share_across_processes
        self.jit_compile = jit_compile
        # Every worker verifies the content it stages against the pin, not just the launcher.
        self.expected_model_id = expected_model_id
        self.decode_device = decode_device
        self.accelerator = accelerator
        self._gpu_decoder: Any = None

    def load_model(self) -> LoadedBundle:
        local = stage_bundle(self.model_uri, expected_model_id=self.expected_model_id)
        return load_bundle(local, precision=self.precision)

    def gpu_decoder(self, max_pixels: int) -> Any:
        """This process's nvImageCodec decoder, made on first use; None on the CPU path.
        A worker whose GPU decoder cannot start decodes with Pillow (slower, but every
        image is still captioned) and says so once."""
        if self.decode_device != "gpu" or self._gpu_decoder is False:
            return None
        if self._gpu_decoder is None:
            try:
                from captioning.images.gpu_decode import DEFAULT_BACKENDS, GpuJpegDecoder

                # The nvImageCodec backends, e.g. "hybrid" alone on a GPU without the
                # hardware JPEG engine; the tests' "cpu" runs this path with no GPU.
                backends = os.environ.get(NVIMGCODEC_BACKENDS, ",".join(DEFAULT_BACKENDS))
                self._gpu_decoder = GpuJpegDecoder(
                    max_pixels=max_pixels, backends=tuple(backends.split(","))
                )
            except Exception as error:  # noqa: BLE001 - Pillow decodes instead
                log.warning("no GPU JPEG decoder on this worker (%s); using Pillow", error)
                self._gpu_decoder = False
                return None
        return self._gpu_decoder

    def run_inference(
        self,
        batch: Sequence[dict],
        model: LoadedBundle,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        image = model.config.image
        decoded = decode_examples(
            list(batch), image.image_size, image.max_pixels, self.gpu_decoder(image.max_pixels)
        )
        good = [example for example in decoded if example.error is None]
        captions = iter(self._generate_or_split(good, model) if good else [])
        for example in decoded:
            if example.error is None:
                inference = next(captions)
            else:
                inference = _failure("decode", *example.error)
            yield PredictionResult(
                example={"width": example.width, "height": example.height},
                inference=inference,
                model_id=model.model_id,
            )

    def _generate_or_split(self, batch: list[DecodedExample], model: LoadedBundle) -> list[dict]:
        """One inference per example: a caption, or for an example that fails even on
        its own, an inference failure. A failing batch is halved and retried."""
        try:
            return self._generate(batch, model)
        except Exception as error:  # noqa: BLE001 - narrowed down to the example(s) at fault
            if len(batch) == 1:
                return [_failure("inference", type(error).__name__, str(error))]
            half = len(batch) // 2
            log.warning(
                "captioning a batch of %d failed (%s: %s); retrying it as %d + %d",
                len(batch),
                type(error).__name__,
                str(error)[:200],
                half,
                len(batch) - half,
            )
            return self._generate_or_split(batch[:half], model) + self._generate_or_split(
                batch[half:], model
            )

    def _generate(self, batch: list[DecodedExample], model: LoadedBundle) -> list[dict]:
        # Stacking is inside the retry too: one wrongly shaped image fails the stack.
        pixels = _stack([example.pixels for example in batch])
        result = model.captioner.generate(
            pixels, beam_width=self.beam_width, jit_compile=self.jit_compile
        )
        return [
            {"caption": caption, "score": score, "alternatives": alternatives}
            for caption, score, alternatives, _ in decode_results(model, result)
        ]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(len(e["jpeg"]) if "jpeg" in e else e["pixels"].nbytes for e in batch)

    def get_resource_hints(self) -> dict:
        return {"accelerator": self.accelerator} if self.accelerator else {}

    def share_model_across_processes(self) -> bool:
        return self._share

    def get_metrics_namespace(self) -> str:
        return "captioning_inference"
