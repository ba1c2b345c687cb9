"""The features job: a captioned dataset -> frozen-backbone features in TFRecord shards.

    ListInputs -> ReadImages -> DecodeImages -> EncodeImages -> WriteFeatures (TFRecord + index)
         \\____________\\______________\\______________\\-> WriteErrors (Parquet)

The same read and decode stages, and the same errors table, as the caption job.
Before the pipeline runs, the launcher builds the backbone once and saves its
weights and a spec beside the output (see ``captioning.training.feature_spec``);
every worker loads that one weights file. Run it with ``captioning features`` or
``python -m pipelines.feature_pipeline``; tests call
``run(argv, test_pipeline=TestPipeline(...))``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import logging
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from captioning.cli.features_command import add_arguments
from captioning.cli.model_flags import apply_model_flags
from captioning.config import CaptionerConfig
from captioning.data.formats import read_captions
from captioning.errors import UserError
from captioning.precision import dtype_policy, resolve_precision
from captioning.presets import get_preset
from captioning.training.example_cache import weights_identity
from captioning.training.feature_spec import (
    FeatureSpec,
    backbone_path,
    build_feature_encoder,
    errors_glob,
    file_sha256,
    index_prefix,
    shards_prefix,
    spec_path,
)
from pipelines.decode_images import DecodeImages
from pipelines.feature_images import EncodeImages
from pipelines.feature_model_handler import FeatureModelHandler
from pipelines.read_images import ListInputs, ReadImages, is_local
from pipelines.write_features import WriteFeatures, image_uri
from pipelines.write_outputs import WriteErrors

log = logging.getLogger("captioning.pipeline")


@dataclass
class FeatureJob:
    """Everything resolved from the flags before anything is written."""

    args: argparse.Namespace
    run_id: str
    output: str
    images: str
    captions: str
    names: list[str]
    config: CaptionerConfig
    precision: str

    @property
    def manifest(self) -> str:
        return f"{self.output}_inputs.txt"


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


def resolve_job(args: argparse.Namespace) -> FeatureJob:
    if args.min_batch_size < 1 or args.max_batch_size < args.min_batch_size:
        raise UserError("need 1 <= --min-batch-size <= --max-batch-size")
    config, preset_precision = feature_config(args.preset, args.image_size, args.backbone_weights)
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
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return FeatureJob(
        args=args,
        run_id=f"{stamp}-{uuid.uuid4().hex[:6]}",
        output=args.output,
        images=images,
        captions=str(Path(args.captions).resolve()),
        names=names,
        config=config,
        precision=resolve_precision(args.precision or preset_precision),
    )


def write_spec(spec: FeatureSpec, output: str) -> None:
    # Through Beam's filesystems, like every other output of the job.
    with FileSystems.create(spec_path(output), mime_type="application/json") as handle:
        handle.write(spec.to_json().encode())


def _copy(local: str, destination: str) -> None:
    with open(local, "rb") as reader, FileSystems.create(destination) as writer:
        while block := reader.read(1 << 22):
            writer.write(block)


def prepare_outputs(job: FeatureJob) -> FeatureSpec:
    """Save the backbone weights, the input list and the (not yet complete) spec."""
    weights = job.config.encoder.backbone_weights
    try:
        with dtype_policy(job.precision):
            encoder = build_feature_encoder(job.config, load_backbone_weights=True)
    except Exception as error:  # noqa: BLE001 - e.g. no internet for "imagenet"
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"cannot build the backbone with weights {weights}: {first_line}") from None
    if is_local(job.output):
        Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as local:
        saved = str(Path(local) / "backbone.weights.h5")
        encoder.backbone.save_weights(saved)
        sha256 = file_sha256(saved)
        _copy(saved, backbone_path(job.output))
    with FileSystems.create(job.manifest, mime_type="text/plain") as handle:
        handle.write("".join(image_uri(job.images, name) + "\n" for name in job.names).encode())
    spec = FeatureSpec(
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
    write_spec(spec, job.output)
    return spec


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
        backbone_path(job.output),
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


def _written_counts(job: FeatureJob) -> dict[str, Any]:
    """What the run wrote, counted from its output files (exact on every runner)."""
    features = 0
    index = FileSystems.match([index_prefix(job.output, job.run_id) + "-*.txt"])[0]
    for match in index.metadata_list:
        with FileSystems.open(match.path) as handle:
            features += sum(1 for line in handle.read().splitlines() if line)
    stages: Counter = Counter()
    errors = FileSystems.match([errors_glob(job.output, job.run_id)])[0]
    for match in errors.metadata_list:
        with FileSystems.open(match.path) as handle:
            table = pq.read_table(io.BytesIO(handle.read()), columns=["stage"])
        stages.update(table.column("stage").to_pylist())
    return {
        "inputs": len(job.names),
        "features": features,
        "errors": sum(stages.values()),
        "errors_by_stage": dict(sorted(stages.items())),
    }


def remove_earlier_runs(output: str, run_id: str) -> int:
    """Delete the shards, indexes and error tables of earlier runs under this prefix."""
    patterns = [
        shards_prefix(output, "*") + ".tfrecord",
        index_prefix(output, "*") + ".txt",
        errors_glob(output, "*"),
    ]
    stale = [
        metadata.path
        for result in FileSystems.match(patterns)
        for metadata in result.metadata_list
        if f"-{run_id}-" not in metadata.path
    ]
    if stale:
        FileSystems.delete(stale)
    return len(stale)


def run_features(
    args: argparse.Namespace, beam_args: list[str], test_pipeline: beam.Pipeline | None = None
) -> dict[str, Any]:
    """Run the features job; returns its summary (also kept in PREFIX_features.json)."""
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
    pipeline = test_pipeline or beam.Pipeline(options=PipelineOptions(beam_args))
    build_pipeline(pipeline, job)
    pipeline.run().wait_until_finish()
    seconds = time.monotonic() - started
    counts = _written_counts(job)
    if counts["features"] + counts["errors"] != counts["inputs"]:
        log.warning("features run %s lost images: %s", job.run_id, counts)
    write_spec(dataclasses.replace(spec, complete=True, counts=counts), job.output)
    removed = remove_earlier_runs(job.output, job.run_id)
    if removed:
        log.info("removed %d files of earlier runs", removed)
    return {
        "run_id": job.run_id,
        "output": job.output,
        **counts,
        "feature_shape": list(spec.feature_shape),
        "precision": job.precision,
        "wall_seconds": round(seconds, 2),
        "images_per_second": round(counts["features"] / seconds, 2) if seconds > 0 else None,
    }


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """``captioning features`` flags plus Beam options, as one argument list."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.feature_pipeline", allow_abbrev=False
    )
    add_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    return run_features(args, beam_args, test_pipeline)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
