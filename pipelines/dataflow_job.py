"""The Dataflow job a caption run would submit, described offline (``--dry_run``).

Beam's DataflowRunner, given ``--dry_run``, translates the pipeline exactly as for a
real submission (Runner v2 experiments, the portable pipeline proto, the container
environment) and stops before it talks to any service. The rest of the job
description (worker pool, machine type, disk, service options, container image, the
options every worker receives) is made by Beam's
``DataflowApplicationClient.create_job_description``, which also uploads the pipeline
proto and the staged files. Here that method runs on a client whose uploads are
recorded instead of sent, so the description is Beam's own, field for field what
``projects.locations.jobs.create`` would receive, made with no credentials and no
network.

A Runner v2 job carries its graph as the Beam pipeline proto staged at ``pipelineUrl``
(the Job's legacy ``steps`` list stays empty), so the description holds that proto
too, and the names of its top-level steps.
"""

from __future__ import annotations

import hashlib
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient
from apache_beam.runners.internal import names
from google.protobuf import json_format

from captioning.errors import UserError


def runs_on_dataflow(options: PipelineOptions) -> bool:
    """True for DataflowRunner under any of the names Beam accepts for it."""
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return False
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower() in ("dataflowrunner", "dataflow")


def check_offline_locations(options: PipelineOptions) -> None:
    """A dry run needs a gs:// --temp_location (or --staging_location): without one,
    Beam's option validation goes looking for a default bucket on GCS."""
    cloud = options.view_as(GoogleCloudOptions)
    validator = PipelineOptionsValidator(options, None)
    for name in ("temp_location", "staging_location"):
        if getattr(cloud, name) and not validator.validate_gcs_path(cloud, name):
            return
    raise UserError("DataflowRunner needs --temp_location gs://BUCKET/PATH (a valid gs:// path)")


class _RecordingClient(apiclient.DataflowApplicationClient):
    """Beam's Dataflow client, except that staging records each file instead of
    uploading it, and it never looks for credentials."""

    def __init__(self, options: PipelineOptions, root_staging_location: str) -> None:
        cloud = options.view_as(GoogleCloudOptions)
        no_auth = cloud.no_auth
        # The constructor would otherwise look for credentials, the GCE metadata
        # server included. Restored at once: the job description lists every option.
        cloud.no_auth = True
        try:
            super().__init__(options, root_staging_location)
        finally:
            cloud.no_auth = no_auth
        self.staged: dict[str, bytes] = {}

    def stage_file_with_retry(self, gcs_or_local_path, file_name, stream_or_path, *_, **__):
        if isinstance(stream_or_path, str):
            with open(stream_or_path, "rb") as handle:
                data = handle.read()
        else:
            data = stream_or_path.read()
        self.staged[FileSystems.join(gcs_or_local_path, file_name)] = data

    def _gcs_file_copy(self, from_path, to_path, sha256):
        with open(from_path, "rb") as handle:
            self.staged[to_path] = handle.read()


def top_level_steps(pipeline_proto: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Labels of the transforms applied directly to the pipeline, in order."""
    transforms = pipeline_proto.components.transforms
    steps = []
    for root_id in pipeline_proto.root_transform_ids:
        root = transforms[root_id]
        children = root.subtransforms if not root.spec.urn else [root_id]
        steps.extend(transforms[child].unique_name for child in children)
    return steps


def describe_dataflow_job(pipeline: beam.Pipeline, options: PipelineOptions) -> dict[str, Any]:
    """Translate ``pipeline`` (built with ``options``, which hold ``--dry_run``) for
    Dataflow and describe the job without submitting it.

    Returns ``{"job": Job resource (REST JSON), "pipeline": the staged Beam pipeline
    proto (JSON), "pipeline_steps": its top-level step labels, "staged_files": path ->
    {bytes, sha256} of every file a real run would upload}``.
    """
    result = pipeline.run()
    job = result.job  # DataflowRunner's dry run returns the translated job, unsent
    # The runner works on its own copy of the options; the job holds that copy.
    client = _RecordingClient(job.options, job.root_staging_location)
    client.create_job_description(job)
    staging = job.google_cloud_options.staging_location
    staged_pipeline = client.staged[FileSystems.join(staging, names.STAGED_PIPELINE_FILENAME)]
    pipeline_proto = beam_runner_api_pb2.Pipeline.FromString(staged_pipeline)
    return {
        "job": json_format.MessageToDict(job.proto._pb),
        "pipeline_steps": top_level_steps(pipeline_proto),
        "staged_files": {
            path: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in sorted(client.staged.items())
        },
        "pipeline": json_format.MessageToDict(pipeline_proto),
    }


def describe_local_job(pipeline: beam.Pipeline, options: PipelineOptions) -> dict[str, Any]:
    """The dry run of any other runner: the options and the top-level steps."""
    proto = pipeline.to_runner_api()
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return {
        "runner": runner if isinstance(runner, str) else type(runner).__name__,
        "pipeline_steps": top_level_steps(proto),
        "options": {
            key: value for key, value in options.get_all_options().items() if value is not None
        },
    }
