"""The caption job: image URIs -> captions and errors in Parquet.

    ListInputs -> [SkipExisting] -> ReadImages -> DecodeImages -> CaptionImages -> WriteCaptions
         \\_____________________________\\______________\\_______________\\-> WriteErrors

Run it with ``captioning caption`` or ``python -m pipelines.caption_pipeline``;
tests call ``run(argv, test_pipeline=TestPipeline(...))``. ``--dry_run`` builds the
pipeline and describes the job instead of running it (for DataflowRunner: the real
Dataflow job description, made offline; see ``pipelines.dataflow_job``).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from captioning.config import captioner_config_from_dict
from captioning.errors import UserError
from pipelines.bundle_staging import read_model_id
from pipelines.caption_images import CaptionImages
from pipelines.caption_model_handler import CaptionModelHandler
from pipelines.dataflow_gpu import apply_gpu_worker_defaults
from pipelines.dataflow_job import (
    check_offline_locations,
    describe_dataflow_job,
    describe_local_job,
    runs_on_dataflow,
)
from pipelines.decode_images import DecodeImages
from pipelines.options import CaptionOptions, normalize_dry_run
from pipelines.read_images import ListInputs, ReadImages, is_local
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
    offline: bool = False  # a dry run: remote outputs are not looked at


def _bundle_config(model: str) -> dict[str, Any]:
    try:
        with FileSystems.open(FileSystems.join(model, "captioner_config.json")) as handle:
            return json.loads(handle.read())
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable bundle"
        raise UserError(f"--model {model} is not a readable model bundle ({error})") from None


def resolve_job(options: CaptionOptions, offline: bool = False) -> CaptionJob:
    """Check the options and read the bundle's settings. ``offline`` (dry runs) leaves
    remote outputs and manifests alone: whether earlier captions exist is then assumed
    from ``--skip-existing``, so the job description shows the step a nightly run has."""
    if not options.input and not options.input_manifest:
        raise UserError("give --input GLOB (repeatable) or --input-manifest FILE")
    if not options.output:
        raise UserError("--output PREFIX is required")
    if not options.model:
        raise UserError("--model BUNDLE is required")
    manifest = options.input_manifest
    if manifest and (is_local(manifest) or not offline) and not FileSystems.exists(manifest):
        raise UserError(f"--input-manifest {options.input_manifest} does not exist")
    if options.beam_width is not None and options.beam_width < 1:
        raise UserError("--beam-width must be at least 1")
    config = captioner_config_from_dict(_bundle_config(options.model))
    try:
        model_id = read_model_id(options.model)
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable bundle"
        raise UserError(f"--model {options.model} has no readable manifest ({error})") from None
    precision = options.precision or ("auto" if options.gpu else config.generation.precision)
    max_batch = options.max_batch_size or (128 if options.gpu else 64)
    if options.min_batch_size < 1 or max_batch < options.min_batch_size:
        raise UserError("need 1 <= --min-batch-size <= --max-batch-size")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    if offline and not is_local(options.output):
        existing = options.skip_existing
    else:
        pattern = table_glob(captions_prefix(options.output))
        existing = FileSystems.match([pattern])[0].metadata_list
    return CaptionJob(
        options=options,
        run_id=f"{stamp}-{uuid.uuid4().hex[:6]}",
        model_id=model_id,
        image_size=config.image.image_size,
        max_pixels=config.image.max_pixels,
        precision=precision,
        max_batch_size=max_batch,
        skip_existing=bool(options.skip_existing and existing),
        offline=offline,
    )


def build_pipeline(pipeline: beam.Pipeline, job: CaptionJob) -> None:
    options = job.options
    listed = pipeline | "ListInputs" >> ListInputs(
        options.input, options.input_manifest, validate=not job.offline
    )
    uris = listed["uris"]
    if job.skip_existing:
        uris = uris | "SkipExisting" >> SkipExisting(
            table_glob(captions_prefix(options.output)), validate=not job.offline
        )
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


def _new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    try:
        return beam.Pipeline(options=options)
    except ValueError as error:
        # Beam validates the runner's options here (project, region, locations...).
        if str(error).startswith("Pipeline has validations errors"):
            raise UserError(" ".join(str(error).split())) from None
        raise


def _dry_run(job: CaptionJob, options: PipelineOptions, gpu_defaults: dict) -> dict:
    pipeline = _new_pipeline(options)
    build_pipeline(pipeline, job)
    describe = describe_dataflow_job if runs_on_dataflow(options) else describe_local_job
    spec = {
        "captioning": {
            "run_id": job.run_id,
            "model_id": job.model_id,
            "precision": job.precision,
            "max_batch_size": job.max_batch_size,
            "skip_existing": job.skip_existing,
            "gpu_settings_filled_in": gpu_defaults,
        },
        **describe(pipeline, options),
    }
    path = job.options.job_spec_out
    if not path:
        return spec
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(spec, indent=2, default=str).encode())
    return {
        "dry_run": True,
        "job_spec": path,
        "job_name": spec.get("job", {}).get("name"),
        "pipeline_steps": spec["pipeline_steps"],
        **spec["captioning"],
    }


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Run the caption job; returns the run summary (also written as PREFIX_summary.json).

    With ``--dry_run`` nothing runs: it returns the job description
    (``pipelines.dataflow_job``), or writes it to ``--job-spec-out``. A Dataflow launch
    that only writes a template (``--template_location``) or does not wait
    (``--no_wait_until_finish``) returns the job's identity instead of a summary; the
    counters are then in the Dataflow job's metrics.
    """
    options = PipelineOptions(normalize_dry_run(sys.argv[1:] if argv is None else argv))
    caption_options = options.view_as(CaptionOptions)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if caption_options.job_spec_out and not dry_run:
        raise UserError("--job-spec-out goes with --dry_run")
    on_dataflow = runs_on_dataflow(options)
    gpu_defaults = apply_gpu_worker_defaults(options) if on_dataflow and caption_options.gpu else {}
    if on_dataflow and dry_run:
        check_offline_locations(options)
    job = resolve_job(caption_options, offline=dry_run)
    if dry_run:
        return _dry_run(job, options, gpu_defaults)
    log.info("caption run %s: model %s, precision %s", job.run_id, job.model_id, job.precision)
    if gpu_defaults:
        log.info("GPU worker settings filled in: %s", gpu_defaults)
    started = time.monotonic()
    pipeline = test_pipeline or _new_pipeline(options)
    build_pipeline(pipeline, job)
    result = pipeline.run()
    identity = {"run_id": job.run_id, "model_id": job.model_id, "output": job.options.output}
    template = options.view_as(GoogleCloudOptions).template_location
    if on_dataflow and template:
        return {**identity, "template_location": template}
    if on_dataflow and options.view_as(StandardOptions).no_wait_until_finish:
        return {**identity, "job_id": result.job_id(), "state": str(result.state)}
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
