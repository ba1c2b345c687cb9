"""The caption job: image URIs -> captions and errors in Parquet.

    ListInputs -> [SkipExisting] -> ReadImages -> DecodeImages -> CaptionImages -> WriteCaptions
         \\_____________________________\\______________\\_______________\\-> WriteErrors

With GPU decoding, ``RouteImages`` after ReadImages sends the JPEGs the GPU takes
straight to CaptionImages as bytes (decoded there, next to the model) and everything
else through DecodeImages (Pillow).

Run it with ``captioning caption`` or ``python -m pipelines.caption_pipeline``;
tests call ``run(argv, test_pipeline=TestPipeline(...))``. ``--dry_run`` builds the
pipeline and describes the job instead of running it (for DataflowRunner: the real
Dataflow job description, made offline; see ``pipelines.dataflow_job``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from captioning import run_layout, storage, tables
from captioning.config import CaptionerConfig, captioner_config_from_dict
from captioning.errors import CommitConflictError, ErrorRateAlert, UserError
from captioning.sources.uris import UnsupportedUriError, is_local, normalize
from pipelines.bundle_staging import check_model_id, read_model_id
from pipelines.caption_images import CaptionImages
from pipelines.caption_model_handler import CaptionModelHandler
from pipelines.commit_tables import CommitPlan, CommitTables
from pipelines.dataflow_gpu import ACCELERATOR_HINT, apply_gpu_worker_defaults
from pipelines.dataflow_job import (
    check_offline_locations,
    describe_dataflow_job,
    describe_local_job,
    runs_on_dataflow,
)
from pipelines.decode_images import DecodeImages
from pipelines.launcher import build_summary, metric_totals, new_run_id, write_summary
from pipelines.legacy_output import import_legacy_captions, legacy_caption_files
from pipelines.list_inputs import SHARDS, ListInputs, inputs_list_anything, normalize_patterns
from pipelines.options import CaptionOptions, FeatureOptions, normalize_dry_run
from pipelines.read_images import ReadImages, ReadSettings, ReadShards
from pipelines.route_images import JPEG, OTHER, RouteImages
from pipelines.skip_existing import SkipExisting
from pipelines.unknown_flags import check_beam_flags
from pipelines.write_outputs import WriteCaptions, WriteErrors

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
    commit: CommitPlan
    decode_device: str = "cpu"  # where JPEGs are decoded: "cpu" or "gpu"
    # --right-fit: the inference step's accelerator resource hint.
    accelerator_hint: str | None = None
    on_dataflow: bool = False
    # Copies of the decode step one SDK process runs at once (its harness threads, on GPU
    # workers); they share the worker's cores.
    decode_threads: int = 1
    # --skip-existing: the data files of the captions snapshot the run starts from.
    existing_captions: list[str] | None = None
    offline: bool = False  # a dry run: remote outputs are not looked at


def _bundle_config(model: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(storage.join(model, "captioner_config.json")))
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable bundle"
        raise UserError(f"--model {model} is not a readable model bundle ({error})") from None


def _check_options(options: CaptionOptions) -> None:
    if not options.input and not options.input_manifest:
        raise UserError("give --input GLOB (repeatable) or --input-manifest FILE")
    if not options.output:
        raise UserError("--output DIR is required")
    if not options.model:
        raise UserError("--model BUNDLE is required")
    if options.beam_width is not None and options.beam_width < 1:
        raise UserError("--beam-width must be at least 1")
    if not 0.0 <= options.max_error_rate <= 1.0:
        raise UserError("--max-error-rate must be between 0 and 1")
    if options.retention_hours < 0:
        raise UserError("--retention-hours must be 0 or more")
    if options.decoders is not None and options.decoders < 1:
        raise UserError("--decoders must be at least 1")
    for flag, value in (
        ("--max-image-bytes", options.max_image_bytes),
        ("--read-timeout", options.read_timeout),
        ("--http-concurrency", options.http_concurrency),
    ):
        if value <= 0:
            raise UserError(f"{flag} must be more than 0")
    try:
        normalize_patterns(options.input)
        if options.input_manifest:
            options.input_manifest = normalize(options.input_manifest)
    except UnsupportedUriError as error:
        raise UserError(f"--input {error}") from None


def _check_writable(output: str) -> None:
    """A local --output the run cannot write to is one line now, not a traceback after
    the pipeline was built."""
    if not is_local(output):
        return
    try:
        os.makedirs(output, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        raise UserError(f"--output {output} is not writable ({error.strerror})") from None


def _model_id(options: CaptionOptions, offline: bool) -> str:
    """The bundle's model id; with ``--expect-model-id`` the bundle's content is hashed
    and must match (a dry run compares what the manifest declares, offline). A dry run
    does not read a bundle in a bucket at all: its id is then the pin, or unknown."""
    if offline and not is_local(options.model):
        return options.expect_model_id or "unknown (a dry run does not read a remote bundle)"
    try:
        model_id = read_model_id(options.model)
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable bundle"
        raise UserError(f"--model {options.model} has no readable manifest ({error})") from None
    expected = options.expect_model_id
    if expected and model_id != expected:
        raise UserError(
            f"--model {options.model} has model id {model_id}, but --expect-model-id "
            f"is {expected}; refusing it"
        )
    if expected and not offline:  # the manifest could lie: hash the files themselves
        model_id = check_model_id(options.model, expected)
    return model_id


def _start_snapshots(options: CaptionOptions, output: str) -> tuple[int, int]:
    """Create the tables if needed (importing captions of the old layout once) and return
    the captions and errors versions this run starts from."""
    retention = options.retention_hours
    captions_version = tables.ensure_table(
        run_layout.captions_table(output), run_layout.CAPTIONS_SCHEMA, retention
    )
    errors_version = tables.ensure_table(
        run_layout.errors_table(output), run_layout.ERRORS_SCHEMA, retention
    )
    legacy = legacy_caption_files(output)
    if legacy and options.skip_existing:
        if import_legacy_captions(output, captions_version):
            captions_version = tables.version(run_layout.captions_table(output))
    elif legacy:
        log.warning(
            "%s holds captions in the old layout (%s); a full run does not read them",
            output,
            run_layout.legacy_patterns(output)["captions"],
        )
    return captions_version, errors_version


def resolve_job(
    options: CaptionOptions, offline: bool = False, on_dataflow: bool = False
) -> CaptionJob:
    """Check the options, read the bundle's settings and fix the snapshots the run starts
    from. ``offline`` (dry runs) writes nothing and leaves remote outputs and manifests
    alone: the job description then shows the steps a nightly run has."""
    _check_options(options)
    manifest = options.input_manifest
    if manifest and (is_local(manifest) or not offline) and not storage.exists(manifest):
        raise UserError(f"--input-manifest {options.input_manifest} does not exist")
    output = run_layout.output_folder(options.output, "the tables")
    options.output = output
    if not offline:
        _check_writable(output)
    if offline and not is_local(options.model):
        # A dry run stays offline: the job is described with the default image settings.
        config = CaptionerConfig()
    else:
        config = captioner_config_from_dict(_bundle_config(options.model))
    model_id = _model_id(options, offline)
    precision = options.precision or ("auto" if options.gpu else config.generation.precision)
    max_batch = options.max_batch_size or (128 if options.gpu else 64)
    if options.min_batch_size < 1 or max_batch < options.min_batch_size:
        raise UserError("need 1 <= --min-batch-size <= --max-batch-size")
    listed = offline or options.allow_empty or inputs_list_anything(options.input, manifest)
    if not listed:
        raise UserError(
            "the inputs list nothing (no glob matched a file, and no manifest line "
            "names one); nothing was committed and earlier captions are untouched "
            "(--allow-empty lets such a run replace them)"
        )
    starts = (0, 0) if offline else _start_snapshots(options, output)
    run_id = new_run_id()
    table = run_layout.captions_table(output)
    earlier = [] if offline else tables.committed_files(table, starts[0])
    return CaptionJob(
        options=options,
        run_id=run_id,
        model_id=model_id,
        image_size=config.image.image_size,
        max_pixels=config.image.max_pixels,
        precision=precision,
        max_batch_size=max_batch,
        commit=CommitPlan(
            output=output,
            run_id=run_id,
            model_id=model_id,
            append=bool(options.skip_existing),
            captions_start=starts[0],
            errors_start=starts[1],
            max_error_rate=options.max_error_rate,
            allow_empty=bool(options.allow_empty),
            retention_hours=options.retention_hours,
            fail_job_on_alert=on_dataflow,
            earlier_captions=bool(earlier) or offline,
        ),
        decode_device=_decode_device(options, on_dataflow),
        accelerator_hint=ACCELERATOR_HINT if options.right_fit and on_dataflow else None,
        on_dataflow=on_dataflow,
        existing_captions=earlier if options.skip_existing else None,
        offline=offline,
    )


def _decode_device(options: CaptionOptions, on_dataflow: bool) -> str:
    """``--decode-device`` resolved where the graph is built. On Dataflow the launcher
    has no GPU, so ``auto`` follows ``--gpu`` (the GPU image has nvImageCodec); locally
    it looks for nvImageCodec and a GPU here."""
    choice = options.decode_device
    if on_dataflow:
        if choice == "gpu" and not options.gpu:
            raise UserError("--decode-device gpu on DataflowRunner needs --gpu (GPU workers)")
        return "gpu" if choice == "gpu" or (choice == "auto" and options.gpu) else "cpu"
    from captioning.images.gpu_decode import resolve_decode_device

    return resolve_decode_device(choice)


def _read_settings(options: CaptionOptions) -> ReadSettings:
    return ReadSettings(
        max_bytes=options.max_image_bytes,
        timeout_s=options.read_timeout,
        http_concurrency=options.http_concurrency,
        user_agent=options.http_user_agent or ReadSettings.user_agent,
        honour_robots_tag=not options.ignore_robots_tag,
    )


def build_pipeline(pipeline: beam.Pipeline, job: CaptionJob) -> None:
    options = job.options
    listed = pipeline | "ListInputs" >> ListInputs(
        options.input,
        options.input_manifest,
        validate=not job.offline,
        uri_column=options.uri_column,
    )
    settings = _read_settings(options)
    uris = listed["uris"]
    if job.existing_captions is not None:
        uris = uris | "SkipExisting" >> SkipExisting(job.existing_captions)
    # Spread the listed URIs over the workers before the expensive stages.
    uris = uris | "Spread" >> beam.Reshuffle()
    read_files = uris | "ReadImages" >> ReadImages(settings)
    shards = listed[SHARDS] | "SpreadShards" >> beam.Reshuffle()
    read_shards = shards | "ReadShards" >> ReadShards(settings)
    members = read_shards["images"]
    if job.existing_captions is not None:
        # A shard is read whole; its members already captioned go no further.
        members = members | "SkipExistingMembers" >> SkipExisting(job.existing_captions)
    read = {
        "images": (read_files["images"], members) | "AllImages" >> beam.Flatten(),
        "errors": (read_files["errors"], read_shards["errors"]) | "ReadErrors" >> beam.Flatten(),
    }
    listed_count = (
        listed["uris"],
        read_shards["images"] | "MemberUris" >> beam.Keys(),
    ) | "AllListed" >> beam.Flatten()
    to_pillow = read["images"]
    if job.decode_device == "gpu":
        routed = read["images"] | "RouteImages" >> RouteImages(job.max_pixels)
        to_pillow = routed[OTHER]
    decoded = to_pillow | "DecodeImages" >> DecodeImages(
        job.image_size,
        job.max_pixels,
        options.decode_timeout,
        options.decode_isolation,
        processes=options.decoders,
        # GPU workers run one SDK process with a decode step per harness thread.
        threads=job.decode_threads,
        # Only compact JPEG bytes cross from the CPU workers to the GPU workers.
        reencode=job.accelerator_hint is not None,
    )
    examples = decoded["decoded"]
    if job.decode_device == "gpu":
        examples = (routed[JPEG], examples) | "ToCaption" >> beam.Flatten()
    handler = CaptionModelHandler(
        options.model,
        beam_width=options.beam_width,
        precision=job.precision,
        min_batch_size=options.min_batch_size,
        max_batch_size=job.max_batch_size,
        # GPU workers run one SDK process, which holds the model (pipelines.dataflow_gpu).
        share_across_processes=False,
        # XLA compiles the search loop's small ops into few GPU kernels.
        jit_compile=options.gpu,
        expected_model_id=options.expect_model_id,
        decode_device=job.decode_device,
        accelerator=job.accelerator_hint,
    )
    captioned = examples | "CaptionImages" >> CaptionImages(handler)
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
        | "CommitTables"
        >> beam.ParDo(
            CommitTables(job.commit),
            listed=beam.pvalue.AsSingleton(
                listed_count | "CountListed" >> beam.combiners.Count.Globally()
            ),
        )
    )


def _warn_without_gpu() -> None:
    """``--gpu`` on a machine whose backend sees no GPU still runs, slowly: say so."""
    from captioning.precision import gpu_compute_capability

    if gpu_compute_capability() is None:
        log.warning(
            "--gpu, but no GPU is visible on this machine: the model runs on the CPU "
            "(check the NVIDIA driver and CUDA libraries, or drop --gpu)"
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
            "decode_device": job.decode_device,
            "right_fit": job.accelerator_hint is not None,
            "skip_existing": job.existing_captions is not None,
            "gpu_settings_filled_in": gpu_defaults,
        },
        **describe(pipeline, options),
    }
    path = job.options.job_spec_out
    if not path:
        return spec
    storage.write_bytes(path, json.dumps(spec, indent=2, default=str).encode(), "application/json")
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
    argv = normalize_dry_run(sys.argv[1:] if argv is None else argv)
    # Beam would drop a misspelt flag and run with its default (see unknown_flags); this
    # also covers the flex template's launcher and `python -m pipelines.caption_pipeline`.
    # The features job's flags mean nothing here: --captions is an error, not ignored.
    check_beam_flags(argv, exclude=[FeatureOptions])
    options = PipelineOptions(argv)
    caption_options = options.view_as(CaptionOptions)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if caption_options.job_spec_out and not dry_run:
        raise UserError("--job-spec-out goes with --dry_run")
    on_dataflow = runs_on_dataflow(options)
    if caption_options.right_fit and not caption_options.gpu:
        raise UserError("--right-fit goes with --gpu: it moves the GPU to the inference step")
    gpu_defaults = {}
    if on_dataflow and caption_options.gpu:
        gpu_defaults = apply_gpu_worker_defaults(options, right_fit=caption_options.right_fit)
    elif caption_options.gpu:
        _warn_without_gpu()
    if on_dataflow and dry_run:
        check_offline_locations(options)
    job = resolve_job(caption_options, offline=dry_run, on_dataflow=on_dataflow)
    if on_dataflow and caption_options.gpu and not caption_options.right_fit:
        # As filled in by apply_gpu_worker_defaults, or as given.
        threads = options.view_as(DebugOptions).number_of_worker_harness_threads
        job.decode_threads = threads or 1
    if dry_run:
        return _dry_run(job, options, gpu_defaults)
    log.info("caption run %s: model %s, precision %s", job.run_id, job.model_id, job.precision)
    if gpu_defaults:
        log.info("GPU worker settings filled in: %s", gpu_defaults)
    started = time.monotonic()
    pipeline = test_pipeline or _new_pipeline(options)
    build_pipeline(pipeline, job)
    template = options.view_as(GoogleCloudOptions).template_location
    no_wait = options.view_as(StandardOptions).no_wait_until_finish
    returns_early = on_dataflow and bool(template or no_wait)
    result = _run_and_wait(pipeline, wait=not returns_early)
    identity = {"run_id": job.run_id, "model_id": job.model_id, "output": job.options.output}
    if returns_early and template:
        return {**identity, "template_location": template}
    if returns_early:
        return {**identity, "job_id": result.job_id(), "state": str(result.state)}
    summary = _summary(job, time.monotonic() - started, metric_totals(result))
    path = write_summary(summary, job.options.output)
    log.info("summary (%s): %s", path, json.dumps(summary))
    return summary


_CONFLICT = re.compile(r"(\S+): another run committed a conflicting change")
_ALERT = re.compile(r"committed, but the error rate [^\n'\"\\]*")


class _HideConflictTracebacks(logging.Filter):
    """Beam logs a failed step with its traceback; a commit conflict is reported as one
    line instead (the CLI's), so its traceback is kept out of the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (_CONFLICT.search(message) or _ALERT.search(message))


def _run_and_wait(pipeline: beam.Pipeline, wait: bool):
    """Run the job and wait for it; a commit conflict on a worker becomes one line."""
    hide = _HideConflictTracebacks()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(hide)
    try:
        result = pipeline.run()
        if wait:
            result.wait_until_finish()
        return result
    except Exception as error:
        alert = _ALERT.search(str(error))
        if alert is not None:
            raise ErrorRateAlert(alert.group(0)) from None
        match = _CONFLICT.search(str(error))
        if match is None:
            raise
        raise CommitConflictError(
            f"{match.group(1)}: another run committed a conflicting change while this run "
            "was working; this run committed nothing there, rerun it"
        ) from None
    finally:
        for handler in handlers:
            handler.removeFilter(hide)


def _summary(job: CaptionJob, seconds: float, totals: dict[str, int]) -> dict[str, Any]:
    plan = job.commit
    summary = build_summary(totals, seconds, job.model_id, job.run_id, plan.output)
    captions_table = run_layout.captions_table(plan.output)
    summary["max_error_rate"] = plan.max_error_rate
    summary["captions_committed"] = tables.committed_by(
        captions_table, plan.app_id(run_layout.CAPTIONS_TABLE)
    )
    summary["table_versions"] = {
        "captions": tables.version(captions_table),
        "errors": tables.version(run_layout.errors_table(plan.output)),
    }
    rate = summary["error_rate"]
    summary["alert"] = None
    if rate is not None and rate > plan.max_error_rate:
        summary["alert"] = (
            f"{summary['errors']} of {summary['inputs']} inputs failed (error rate "
            f"{rate:.3f} > --max-error-rate {plan.max_error_rate:g})"
            + ("" if summary["captions_committed"] else "; the earlier captions were kept")
        )
    elif not summary["captions_committed"]:
        summary["alert"] = "the run captioned nothing; the earlier captions were kept"
    return summary
