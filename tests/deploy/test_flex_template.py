"""The flex template's metadata: a valid TemplateMetadata whose parameters are the caption
job's options, passed the way the template launcher passes them (``--name=value``)."""

from __future__ import annotations

import re

from apache_beam.options.pipeline_options import PipelineOptions
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format

from pipelines.options import CaptionOptions
from tests.deploy.conftest import DEPLOY, beam_option_names, caption_option_actions

# A valid value of each parameter, as a launch would give it.
EXAMPLE_VALUES = {
    "input": "gs://my-bucket/photos/**",
    "input_manifest": "gs://my-bucket/manifest.csv",
    "uri_column": "url",
    "http_user_agent": "my-archive-bot/1.0",
    "ignore_robots_tag": "false",
    "output": "gs://my-bucket/captions/archive",
    "model": "gs://my-bucket/models/current",
    "skip_existing": "true",
    "expect_model_id": "sha256-0123456789abcdef0123456789abcdef",
    "max_error_rate": "0.02",
    "retention_hours": "72",
    "gpu": "false",
    "right_fit": "false",
    "decode_device": "cpu",
    "sdk_container_image": "us-docker.pkg.dev/p/r/captioning-worker:1",
    "beam_width": "3",
    "min_batch_size": "4",
    "max_batch_size": "96",
    "precision": "mixed_float16",
    "decode_timeout": "12.5",
}


def test_metadata_is_valid_template_metadata(metadata):
    message = dataflow.TemplateMetadata.pb(dataflow.TemplateMetadata())
    json_format.ParseDict(metadata, message)  # unknown fields or bad enums raise
    assert message.name and message.description
    assert not message.streaming


def test_every_parameter_is_an_option_of_the_job(template_parameters):
    ours = caption_option_actions()
    unknown = set(template_parameters) - set(ours) - beam_option_names()
    assert not unknown, f"not options of the caption job or of Beam: {unknown}"
    # The job's options a template user needs are all there (the rest are tuning).
    assert {"input", "input_manifest", "output", "model", "skip_existing", "gpu"} <= set(
        template_parameters
    )
    # A template launch cannot run without these; the job itself refuses to.
    required = {name for name, p in template_parameters.items() if not p.get("isOptional")}
    assert required == {"output", "model"}


def test_parameter_types_follow_the_options(template_parameters):
    ours = caption_option_actions()
    for name, parameter in template_parameters.items():
        action = ours.get(name)
        if parameter.get("paramType") == "ENUM":
            offered = [option["value"] for option in parameter["enumOptions"]]
            assert offered == list(action.choices), name
        if parameter.get("paramType") == "BOOLEAN":
            assert action.const is True and action.default is False, name
        for regex in parameter.get("regexes", []):
            assert re.fullmatch(regex, EXAMPLE_VALUES[name]), (name, regex)


def test_launcher_style_arguments_parse_into_the_job_options(template_parameters):
    argv = [f"--{name}={EXAMPLE_VALUES[name]}" for name in template_parameters]
    options = PipelineOptions(argv).view_as(CaptionOptions)
    assert options.input == ["gs://my-bucket/photos/**"]
    assert options.input_manifest == "gs://my-bucket/manifest.csv"
    assert options.skip_existing is True
    assert options.gpu is False and options.right_fit is False
    assert options.decode_device == "cpu"
    assert options.beam_width == 3 and options.max_batch_size == 96
    assert options.precision == "mixed_float16"
    assert options.decode_timeout == 12.5
    assert options.expect_model_id == "sha256-0123456789abcdef0123456789abcdef"
    assert options.max_error_rate == 0.02 and options.retention_hours == 72
    everything = PipelineOptions(argv).get_all_options()
    assert everything["sdk_container_image"] == EXAMPLE_VALUES["sdk_container_image"]


def test_yes_no_options_still_work_as_bare_flags():
    options = PipelineOptions(["--gpu", "--skip-existing"]).view_as(CaptionOptions)
    assert options.gpu is True and options.skip_existing is True
    options = PipelineOptions([]).view_as(CaptionOptions)
    assert options.gpu is False and options.skip_existing is False


def test_the_image_runs_the_entry_script_it_copies():
    dockerfile = (DEPLOY / "dataflow" / "Dockerfile").read_text()
    entry = re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)$", dockerfile, re.M).group(1)
    copied = re.search(r"^COPY (deploy/dataflow/launch_caption_job\.py) (\S+)$", dockerfile, re.M)
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1)
    assert copied, "the Dockerfile must copy the entry script"
    assert copied.group(2) in ("./", f"{workdir}/", entry)
    assert entry == f"{workdir}/launch_caption_job.py"
    assert (DEPLOY.parent / copied.group(1)).is_file()
    assert "/opt/google/dataflow/python_template_launcher" in dockerfile
