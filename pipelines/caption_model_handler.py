"""CaptionModelHandler: Beam's RunInference contract around a captioning model bundle.

Beam owns the rest: ``BatchElements`` sizes the batches, the shared-model manager
loads the bundle once per worker process (or once per machine with
``share_model_across_processes``, for GPU workers), and RunInference's dead-letter
output turns a failing batch into error rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from captioning.bundle import LoadedBundle, load_bundle
from captioning.inference import decode_results
from pipelines.bundle_staging import stage_bundle


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

    def load_model(self) -> LoadedBundle:
        return load_bundle(stage_bundle(self.model_uri), precision=self.precision)

    def run_inference(
        self,
        batch: Sequence[dict],
        model: LoadedBundle,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        pixels = np.stack([example["pixels"] for example in batch])
        result = model.captioner.generate(
            pixels, beam_width=self.beam_width, jit_compile=self.jit_compile
        )
        for example, (caption, score, alternatives, _) in zip(
            batch, decode_results(model, result), strict=True
        ):
            inference = {"caption": caption, "score": score, "alternatives": alternatives}
            yield PredictionResult(
                example={"width": example["width"], "height": example["height"]},
                inference=inference,
                model_id=model.model_id,
            )

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(example["pixels"].nbytes for example in batch)

    def share_model_across_processes(self) -> bool:
        return self._share

    def get_metrics_namespace(self) -> str:
        return "captioning_inference"
