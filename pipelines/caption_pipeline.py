"""The caption job: image URIs -> captions and errors in Parquet.

    ListInputs -> [SkipExisting] -> ReadImages -> DecodeImages -> CaptionImages -> WriteCaptions
         \\_____________________________\\______________\\_______________\\-> WriteErrors

Run it with ``captioning caption`` or ``python -m pipelines.caption_pipeline``;
tests call ``run(argv, test_pipeline=TestPipeline(...))``.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from captioning.config import captioner_config_from_dict
from captioning.errors import UserError
from pipelines.bundle_staging import read_model_id
from pipelines.caption_images import CaptionImages
from pipelines.caption_model_handler import CaptionModelHandler
from pipelines.decode_images import DecodeImages
from pipelines.options import CaptionOptions
from pipelines.read_images import ListInputs, ReadImages
from pipelines.run_summary import build_summary, counters, write_summary
from pipelines.skip_existing import SkipExisting
from pipelines.write_outputs import (
    RemoveStaleShards,
    WriteCaptions,
    WriteErrors,
    captions_prefix,
    table_glob,
)

log = logging.getLogger("captioning.pipeline")


@dataclass
class CaptionJob:
    """Everything resolved from the options before the pipeline is built."""

    options: CaptionOptions
    run_id: str
    model_id: str
    image_size: int
    max_pixels: int
    precision: str
    max_batch_size: int
    skip_existing: bool


def _bundle_config(model: str) -> dict[str, Any]:
    try:
        with FileSystems.open(FileSystems.join(model, "captioner_config.json")) as handle:
            return json.loads(handle.read())
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable bundle"
        raise UserError(f"--model {model} is not a readable model bundle ({error})") from None


def resolve_job(options: CaptionOptions) -> CaptionJob:
    if not options.input and not options.input_manifest:
        raise UserError("give --input GLOB (repeatable) or --input-manifest FILE")
    if not options.output:
        raise UserError("--output PREFIX is required")
    if not options.model:
        raise UserError("--model BUNDLE is required")
    if options.input_manifest and not FileSystems.exists(options.input_manifest):
        raise UserError(f"--input-manifest {options.input_manifest} does not exist")
    if options.beam_width is not None and options.beam_width < 1:
        raise UserError("--beam-width must be at least 1")
    config = captioner_config_from_dict(_bundle_config(options.model))
    model_id = read_model_id(options.model)
    precision = options.precision or ("auto" if options.gpu else config.generation.precision)
    max_batch = options.max_batch_size or (128 if options.gpu else 64)
    if options.min_batch_size < 1 or max_batch < options.min_batch_size:
        raise UserError("need 1 <= --min-batch-size <= --max-batch-size")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    existing = FileSystems.match([table_glob(captions_prefix(options.output))])[0].metadata_list
    return CaptionJob(
        options=options,
        run_id=f"{stamp}-{uuid.uuid4().hex[:6]}",
        model_id=model_id,
        image_size=config.image.image_size,
        max_pixels=config.image.max_pixels,
        precision=precision,
        max_batch_size=max_batch,
        skip_existing=bool(options.skip_existing and existing),
    )


def build_pipeline(pipeline: beam.Pipeline, job: CaptionJob) -> None:
    options = job.options
    listed = pipeline | "ListInputs" >> ListInputs(options.input, options.input_manifest)
    uris = listed["uris"]
    if job.skip_existing:
        uris = uris | "SkipExisting" >> SkipExisting(table_glob(captions_prefix(options.output)))
    # Spread the listed URIs over the workers before the expensive stages.
    uris = uris | "Spread" >> beam.Reshuffle()
    read = uris | "ReadImages" >> ReadImages()
    decoded = read["images"] | "DecodeImages" >> DecodeImages(
        job.image_size, job.max_pixels, options.decode_timeout, options.decode_isolation
    )
    handler = CaptionModelHandler(
        options.model,
        beam_width=options.beam_width,
        precision=job.precision,
        min_batch_size=options.min_batch_size,
        max_batch_size=job.max_batch_size,
        share_across_processes=options.gpu,
        # XLA compiles the search loop's small ops into few GPU kernels.
        jit_compile=options.gpu,
    )
    captioned = decoded["decoded"] | "CaptionImages" >> CaptionImages(handler)
    errors = (
        listed["errors"],
        read["errors"],
        decoded["errors"],
        captioned["errors"],
    ) | "AllErrors" >> beam.Flatten()
    written_captions = captioned["captions"] | "WriteCaptions" >> WriteCaptions(
        options.output, job.run_id
    )
    written_errors = errors | "WriteErrors" >> WriteErrors(options.output, job.run_id)
    _ = (
        (written_captions, written_errors)
        | "WrittenFiles" >> beam.Flatten()
        | "AllWritten" >> beam.combiners.ToList()
        | "RemoveStaleShards"
        >> beam.ParDo(
            RemoveStaleShards(options.output, job.run_id, keep_earlier_captions=job.skip_existing)
        )
    )


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Run the caption job; returns the run summary (also written as PREFIX_summary.json)."""
    options = PipelineOptions(argv)
    job = resolve_job(options.view_as(CaptionOptions))
    all_options = options.get_all_options()
    if all_options.get("dry_run"):
        spec = {
            "run_id": job.run_id,
            "model_id": job.model_id,
            "precision": job.precision,
            "options": {k: v for k, v in all_options.items() if v is not None},
        }
        if job.options.job_spec_out:
            with open(job.options.job_spec_out, "w") as handle:
                json.dump(spec, handle, indent=2, default=str)
        return spec
    log.info("caption run %s: model %s, precision %s", job.run_id, job.model_id, job.precision)
    started = time.monotonic()
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(pipeline, job)
    result = pipeline.run()
    result.wait_until_finish()
    summary = build_summary(
        counters(result),
        time.monotonic() - started,
        job.model_id,
        job.run_id,
        job.options.output,
    )
    path = write_summary(summary, job.options.output)
    log.info("summary (%s): %s", path, json.dumps(summary))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
