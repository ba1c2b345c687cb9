"""CaptionModelHandler: Beam's RunInference contract around a captioning model bundle.

Beam owns the rest: ``BatchElements`` sizes the batches, the shared-model manager
loads the bundle once per worker process (or once per machine with
``share_model_across_processes``, for GPU workers), and RunInference's dead-letter
output turns a failure outside generation (e.g. loading the model) into error rows.

A batch whose generation fails is split in halves and retried, down to single
examples, so one bad image costs one error row rather than its whole batch. An example
that fails alone comes out as a PredictionResult whose inference is
``{"error_type", "message"}`` (see ``inference_error``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from captioning.bundle import LoadedBundle, load_bundle
from captioning.inference import decode_results
from pipelines.bundle_staging import stage_bundle

log = logging.getLogger("captioning.pipeline")


def inference_error(prediction: PredictionResult) -> tuple[str, str] | None:
    """(error_type, message) when generation failed for this example, else None."""
    inference = prediction.inference
    if isinstance(inference, dict) and "error_type" in inference:
        return inference["error_type"], inference["message"]
    return None


class CaptionModelHandler(ModelHandler[dict, PredictionResult, LoadedBundle]):
    """Examples are decoded images ``{"pixels", "width", "height"}``; inferences are
    ``{"caption", "score", "alternatives"}``. Wrap in ``KeyedModelHandler`` to key by URI."""

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

    def load_model(self) -> LoadedBundle:
        local = stage_bundle(self.model_uri, expected_model_id=self.expected_model_id)
        return load_bundle(local, precision=self.precision)

    def run_inference(
        self,
        batch: Sequence[dict],
        model: LoadedBundle,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        inferences = self._generate_or_split(list(batch), model)
        for example, inference in zip(batch, inferences, strict=True):
            yield PredictionResult(
                example={"width": example["width"], "height": example["height"]},
                inference=inference,
                model_id=model.model_id,
            )

    def _generate_or_split(self, batch: list[dict], model: LoadedBundle) -> list[dict]:
        """One inference per example: a caption, or for an example that fails even on
        its own, ``{"error_type", "message"}``. A failing batch is halved and retried."""
        try:
            return self._generate(batch, model)
        except Exception as error:  # noqa: BLE001 - narrowed down to the example(s) at fault
            if len(batch) == 1:
                return [{"error_type": type(error).__name__, "message": str(error)}]
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

    def _generate(self, batch: list[dict], model: LoadedBundle) -> list[dict]:
        # Stacking is inside the retry too: one wrongly shaped image fails np.stack.
        pixels = np.stack([example["pixels"] for example in batch])
        result = model.captioner.generate(
            pixels, beam_width=self.beam_width, jit_compile=self.jit_compile
        )
        return [
            {"caption": caption, "score": score, "alternatives": alternatives}
            for caption, score, alternatives, _ in decode_results(model, result)
        ]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(example["pixels"].nbytes for example in batch)

    def share_model_across_processes(self) -> bool:
        return self._share

    def get_metrics_namespace(self) -> str:
        return "captioning_inference"
