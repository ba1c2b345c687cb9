"""The features job: a captioned dataset -> frozen-backbone features in TFRecord shards.

    ListInputs -> ReadImages -> DecodeImages -> EncodeImages -> WriteFeatures (TFRecord + index)
         \\____________\\______________\\______________\\-> WriteErrors (errors table files)

The same read and decode stages, and the same errors schema, as the caption job. Its
output is ``--output DIR`` in the layout of ``captioning.run_layout``. The launcher
builds the backbone once and saves it as the run's own ``DIR/backbone-<run>.weights.h5``
(every worker loads that one file), runs the pipeline, which writes the run's shards,
index and error files beside the committed run's, and then commits, in this order:

1. the errors table, ``replace_read`` from the version the run started from;
2. ``DIR/features.json``, the spec naming the run's files and that errors table
   version, in one atomic write. This is the commit: readers follow the spec only, so
   until it is written they see the previous run, whole.

Then it deletes the files of the run the spec named before, those that runs which never
committed left behind once they are older than ``--retention-hours`` (a younger one may
belong to a run still going), and vacuums the errors table. A run killed at any point
leaves the committed run intact; a run that computed no features commits nothing.

Run it with ``captioning features`` or ``python -m pipelines.feature_pipeline``; tests
call ``run(argv, test_pipeline=TestPipeline(...))``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from captioning import run_layout, storage, tables
from captioning.config import CaptionerConfig
from captioning.data.formats import read_captions
from captioning.errors import UserError
from captioning.model_flags import apply_model_flags
from captioning.precision import dtype_policy, resolve_precision
from captioning.presets import get_preset
from captioning.sources.uris import is_local
from captioning.training.example_cache import weights_identity
from captioning.training.feature_spec import FeatureSpec, build_feature_encoder, file_sha256
from pipelines.commit_tables import describe_files, hold_for_test
from pipelines.decode_images import DecodeImages
from pipelines.feature_images import EncodeImages
from pipelines.feature_model_handler import FeatureModelHandler
from pipelines.launcher import RUN_ID, new_run_id, remove_beam_temp, write_whole
from pipelines.list_inputs import ListInputs
from pipelines.options import CaptionOptions, FeatureOptions
from pipelines.read_images import ReadImages
from pipelines.unknown_flags import check_beam_flags
from pipelines.write_features import WriteFeatures, image_uri
from pipelines.write_outputs import WriteErrors

log = logging.getLogger("captioning.pipeline")


def inputs_path(output: str, run_id: str) -> str:
    """The run's list of image URIs, read by the workers; deleted once the run commits.
    (Not a reader's file, so not in ``run_layout``'s table of outputs.)"""
    return run_layout.join(output, run_layout.SHARDS_FOLDER, f"inputs-{run_id}.txt")


@dataclass
class FeatureJob:
    """Everything resolved from the flags before anything is written."""

    args: FeatureOptions
    run_id: str
    output: str  # DIR: absolute when local
    images: str
    captions: str
    names: list[str]
    config: CaptionerConfig
    precision: str
    errors_start: int  # the errors table version the run starts from
    retention_hours: int

    @property
    def manifest(self) -> str:
        return inputs_path(self.output, self.run_id)

    @property
    def errors_app_id(self) -> str:
        return f"captioning-features-{self.run_id}-{run_layout.ERRORS_TABLE}"


def feature_config(
    preset: str, image_size: int | None, backbone_weights: str | None
) -> tuple[CaptionerConfig, str]:
    """The preset's captioner config with the flags applied, frozen; and its precision."""
    train_config = get_preset(preset)
    config = apply_model_flags(train_config.captioner, image_size, backbone_weights)
    if config.image.normalization == "dataset" and config.image.mean is None:
        raise UserError("features need a fixed normalization; this preset measures the dataset's")
    encoder = dataclasses.replace(config.encoder, trainable=False)
    return dataclasses.replace(config, encoder=encoder), train_config.precision


def resolve_job(args: FeatureOptions) -> FeatureJob:
    for flag, value in (("--captions FILE", args.captions), ("--images DIR", args.images)):
        if not value:
            raise UserError(f"{flag} is required")
    if not args.output:
        raise UserError("--output DIR is required")
    args.max_batch_size = args.max_batch_size or 64
    if args.min_batch_size < 1 or args.max_batch_size < args.min_batch_size:
        raise UserError("need 1 <= --min-batch-size <= --max-batch-size")
    if args.retention_hours < 0:
        raise UserError("--retention-hours must be 0 or more")
    config, preset_precision = feature_config(args.preset, args.image_size, args.backbone_weights)
    output = run_layout.output_folder(args.output, "the features")
    images = args.images.rstrip("/")
    if is_local(images):
        if not Path(images).is_dir():
            raise UserError(f"--images {images} is not a directory")
        images = str(Path(images).resolve())
    # No images directory here: a listed image that is missing becomes a read error row,
    # so every image of the captions ends in the features or in the errors table.
    data = read_captions(args.captions, None, args.format)
    names = data.images()
    if not names:
        raise UserError(f"no images in {args.captions}")
    log.info(data.report.summary())
    errors_start = tables.ensure_table(
        run_layout.errors_table(output), run_layout.ERRORS_SCHEMA, args.retention_hours
    )
    return FeatureJob(
        args=args,
        run_id=new_run_id(),
        output=output,
        images=images,
        captions=str(Path(args.captions).resolve()),
        names=names,
        config=config,
        precision=resolve_precision(args.precision or preset_precision),
        errors_start=errors_start,
        retention_hours=args.retention_hours,
    )


def write_spec(spec: FeatureSpec, output: str) -> None:
    """Write ``DIR/features.json`` whole: the commit of a features run."""
    write_whole(run_layout.feature_spec_path(output), spec.to_json().encode())


def _committed_run_id(output: str) -> str | None:
    """The run the current spec names (its files are replaced by this run's), if any."""
    path = run_layout.feature_spec_path(output)
    try:
        run_id = json.loads(storage.read_bytes(path)).get("run_id")
    except Exception:  # noqa: BLE001 - no spec, or not one: nothing to replace
        return None
    return run_id if isinstance(run_id, str) and RUN_ID.fullmatch(run_id) else None


def prepare_outputs(job: FeatureJob) -> FeatureSpec:
    """Save the run's backbone weights and input list; return the run's spec, not yet
    written (it is written only when the run commits)."""
    weights = job.config.encoder.backbone_weights
    try:
        with dtype_policy(job.precision):
            encoder = build_feature_encoder(job.config, load_backbone_weights=True)
    except Exception as error:  # noqa: BLE001 - e.g. no internet for "imagenet"
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"cannot build the backbone with weights {weights}: {first_line}") from None
    with tempfile.TemporaryDirectory() as local:
        saved = str(Path(local) / "backbone.weights.h5")
        encoder.backbone.save_weights(saved)
        sha256 = file_sha256(saved)
        # The run's own file: the committed run's backbone stays as it is until this
        # run commits.
        storage.copy_file(saved, run_layout.backbone_path(job.output, job.run_id))
    listing = "".join(image_uri(job.images, name) + "\n" for name in job.names)
    storage.write_bytes(job.manifest, listing.encode(), content_type="text/plain")
    return FeatureSpec(
        run_id=job.run_id,
        captions=job.captions,
        captions_format=job.args.format,
        images=job.images,
        image=job.config.image,
        feature_layer=job.config.encoder.feature_layer,
        backbone_weights=weights,
        backbone_source=weights_identity(weights),
        backbone_sha256=sha256,
        precision=job.precision,
        feature_shape=(encoder.grid_size, encoder.backbone_channels),
    )


def build_pipeline(pipeline: beam.Pipeline, job: FeatureJob) -> None:
    args = job.args
    listed = pipeline | "ListInputs" >> ListInputs([], job.manifest)
    # Spread the listed URIs over the workers before the expensive stages.
    uris = listed["uris"] | "Spread" >> beam.Reshuffle()
    read = uris | "ReadImages" >> ReadImages()
    decoded = read["images"] | "DecodeImages" >> DecodeImages(
        job.config.image.image_size,
        job.config.image.max_pixels,
        args.decode_timeout,
        args.decode_isolation,
    )
    handler = FeatureModelHandler(
        job.config,
        run_layout.backbone_path(job.output, job.run_id),
        precision=job.precision,
        min_batch_size=args.min_batch_size,
        max_batch_size=args.max_batch_size,
    )
    encoded = decoded["decoded"] | "EncodeImages" >> EncodeImages(handler)
    errors = (
        listed["errors"],
        read["errors"],
        decoded["errors"],
        encoded["errors"],
    ) | "AllErrors" >> beam.Flatten()
    _ = encoded["features"] | "WriteFeatures" >> WriteFeatures(job.output, job.run_id, job.images)
    _ = errors | "WriteErrors" >> WriteErrors(job.output, job.run_id)


@dataclass
class Written:
    """The files the finished pipeline wrote for this run, found by the run's own id."""

    shards: list[str]  # relative to DIR, as the spec names them
    index: list[str]
    errors: list[tables.DataFile]  # relative to the errors table's folder
    counts: dict[str, Any]


def collect_written(job: FeatureJob) -> Written:
    """The run's files and what they hold (exact on every runner: counted from the files)."""
    folder = job.output.rstrip("/") + "/"

    def relative(path: str) -> str:
        return path[len(folder) :] if path.startswith(folder) else path

    shards = storage.glob(run_layout.shards_glob(job.output, job.run_id))
    index = storage.glob(run_layout.index_glob(job.output, job.run_id))
    features = sum(1 for path in index for line in storage.read_bytes(path).splitlines() if line)
    table = run_layout.errors_table(job.output)
    error_paths = storage.glob(run_layout.data_file_prefix(table, job.run_id) + "-*.parquet")
    stages: Counter = Counter()
    for path in error_paths:
        rows = pq.read_table(io.BytesIO(storage.read_bytes(path)), columns=["stage"])
        stages.update(rows.column("stage").to_pylist())
    counts = {
        "inputs": len(job.names),
        "features": features,
        "errors": sum(stages.values()),
        "errors_by_stage": dict(sorted(stages.items())),
    }
    return Written(
        [relative(p) for p in shards],
        [relative(p) for p in index],
        describe_files(table, error_paths),
        counts,
    )


def commit_run(job: FeatureJob, spec: FeatureSpec, written: Written) -> FeatureSpec:
    """Commit the errors, then the spec (the pointer to the run); returns the spec written.
    Raises ``CommitConflictError`` when the errors table could not be committed; then
    the spec is not written and the committed run stays."""
    hold_for_test("features-written")
    table = run_layout.errors_table(job.output)
    version = tables.commit(
        table,
        [file for file in written.errors if file.rows],
        "replace_read",
        job.errors_start,
        job.errors_app_id,
        run_layout.ERRORS_SCHEMA,
        {"run_id": job.run_id, "job": "features"},
    )
    if version is None:  # this run's transaction is in already (a retried commit step)
        version = tables.version(table)
    hold_for_test("features-errors-committed")
    committed = dataclasses.replace(
        spec,
        complete=True,
        counts=written.counts,
        shards=tuple(written.shards),
        index=tuple(written.index),
        errors_version=version,
    )
    write_spec(committed, job.output)
    return committed


def _run_of(output: str, path: str) -> str | None:
    """The run that wrote ``path`` (a file or Beam temporary folder under DIR)."""
    folder = output.rstrip("/") + "/"
    found = RUN_ID.search(path[len(folder) :] if path.startswith(folder) else path)
    return found.group(0) if found else None


def remove_stale_runs(
    output: str, run_id: str, replaced: str | None, retention_hours: int
) -> list[str]:
    """After ``run_id`` committed: delete the files of the run it replaced, this run's own
    leftovers (input list, Beam temporary folders), and the files of runs that never
    committed once they are older than the retention (a younger one may be a run still
    writing). Returns the deleted paths."""
    cutoff = time.time() - retention_hours * 3600
    shards = run_layout.join(output, run_layout.SHARDS_FOLDER)

    def stale(file: storage.FileInfo) -> bool:
        run = _run_of(output, file.path)
        if run is None:  # not a features run's file: not ours to delete
            return False
        if run == run_id:
            return file.path == inputs_path(output, run_id)
        return run == replaced or file.updated < cutoff

    files = [
        *storage.match(run_layout.join(shards, "*")),
        *storage.match(run_layout.backbone_path(output, "*")),
    ]
    deleted = sorted(file.path for file in files if stale(file))
    for path in deleted:
        storage.delete(path)
    for folder in (shards, run_layout.errors_table(output)):
        deleted += remove_beam_temp(folder, run_id, retention_hours, replaced)
    return deleted


def _tidy(job: FeatureJob, written: Written, replaced: str | None) -> None:
    """After the commit, best effort: a failure here must not fail a committed run."""
    try:
        empty = [f.path for f in written.errors if not f.rows]  # not committed
        table = run_layout.errors_table(job.output)
        for path in empty:
            storage.delete(run_layout.join(table, path))
        removed = remove_stale_runs(job.output, job.run_id, replaced, job.retention_hours)
        if removed:
            log.info("removed %d files of earlier runs", len(removed))
        tables.vacuum(table, job.retention_hours)
    except Exception as error:  # noqa: BLE001 - the next run tries again
        log.warning(
            "tidying %s after the commit failed (%s); the next run retries", job.output, error
        )


def _discard(job: FeatureJob, written: Written) -> None:
    """A run that is not committed: its files go now, not a retention later."""
    table = run_layout.errors_table(job.output)
    paths = [run_layout.join(job.output, name) for name in [*written.shards, *written.index]]
    paths += [run_layout.join(table, file.path) for file in written.errors]
    paths.append(run_layout.backbone_path(job.output, job.run_id))
    try:
        for path in paths:
            storage.delete(path)
        remove_stale_runs(job.output, job.run_id, None, job.retention_hours)
    except Exception as error:  # noqa: BLE001 - a later run's clean-up removes them
        log.warning("could not remove the files of run %s (%s)", job.run_id, error)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Run the features job and commit it; returns its summary (the spec keeps the counts).
    ``argv``: the job's flags (``pipelines.options.FeatureOptions``) and Beam's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The caption job's flags mean nothing here: --skip-existing is an error, not ignored.
    check_beam_flags(argv, exclude=[CaptionOptions])
    options = PipelineOptions(argv)
    args = options.view_as(FeatureOptions)
    job = resolve_job(args)
    spec = prepare_outputs(job)
    log.info(
        "features run %s: %d images, %s at %d px, precision %s, features %s",
        job.run_id,
        len(job.names),
        job.config.encoder.feature_layer,
        job.config.image.image_size,
        job.precision,
        spec.feature_shape,
    )
    started = time.monotonic()
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(pipeline, job)
    pipeline.run().wait_until_finish()
    seconds = time.monotonic() - started
    written = collect_written(job)
    counts = written.counts
    if counts["features"] + counts["errors"] != counts["inputs"]:
        log.warning("features run %s lost images: %s", job.run_id, counts)
    if counts["features"] == 0:
        # Committing would replace usable features with none.
        _discard(job, written)
        raise UserError(
            f"features run {job.run_id} computed no features ({counts['errors']} errors: "
            f"{counts['errors_by_stage']}); nothing was committed, {job.output} is unchanged"
        )
    replaced = _committed_run_id(job.output)
    committed = commit_run(job, spec, written)
    log.info(
        "committed features run %s to %s (errors table version %s)%s",
        job.run_id,
        run_layout.feature_spec_path(job.output),
        committed.errors_version,
        f"; it replaces run {replaced}" if replaced else "",
    )
    _tidy(job, written, replaced)
    return {
        "run_id": job.run_id,
        "output": job.output,
        **counts,
        "feature_shape": list(spec.feature_shape),
        "precision": job.precision,
        "errors_version": committed.errors_version,
        "wall_seconds": round(seconds, 2),
        "images_per_second": round(counts["features"] / seconds, 2) if seconds > 0 else None,
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
