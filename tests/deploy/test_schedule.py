"""The nightly schedules: the Cloud Scheduler body and the Airflow DAG launch the flex
template with its own parameters, the same way, with skip_existing.

The DAG is validated by parsing it (ast), not by importing it under Airflow. Installing
apache-airflow-providers-google here would add 170 packages (Airflow 3.3 and its own
web, database and scheduler stack) to the Beam/TensorFlow test environment and
downgrade one of its packages (``pip install --dry-run``, measured); Airflow supports
only installs pinned by its own constraint files, and Cloud Composer brings Airflow
itself. So the test checks what Airflow would use: the operator's import path and
keyword arguments, the schedule, and the request body, which must be the Cloud
Scheduler job's. (Once, by hand, in a separate virtualenv: the DAG imports and builds
under Airflow 3.3.2 with the Google and Apache Beam providers; deploy/schedule/README.md.)
"""

from __future__ import annotations

import ast
import json
import re
import runpy
import sys

import pytest
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format

from captioning import run_layout, tables
from pipelines.bundle_staging import read_model_id
from pipelines.caption_pipeline import run
from pipelines.dataflow_gpu import ACCELERATOR
from tests.deploy.conftest import DEPLOY, read_json
from tests.deploy.offline import refuse_network

BODY = DEPLOY / "schedule" / "flex_launch_body.json"
DAG = DEPLOY / "schedule" / "caption_nightly_dag.py"
LAUNCH_SCRIPT = DEPLOY / "dataflow" / "launch_caption_job.py"
# DataflowStartFlexTemplateOperator.__init__'s parameters (apache-airflow-providers-google,
# airflow/providers/google/cloud/operators/dataflow.py), plus BaseOperator's task_id.
OPERATOR_PARAMETERS = {
    "task_id",
    "body",
    "location",
    "project_id",
    "gcp_conn_id",
    "drain_pipeline",
    "cancel_timeout",
    "wait_until_finished",
    "impersonation_chain",
    "deferrable",
    "append_job_name",
    "expected_terminal_state",
    "poll_sleep",
}


def _launch_request(body: dict) -> dataflow.LaunchFlexTemplateRequest:
    message = dataflow.LaunchFlexTemplateRequest.pb(dataflow.LaunchFlexTemplateRequest())
    json_format.ParseDict(body, message)  # unknown fields or wrong types raise
    return message


def _check_parameters(parameters: dict[str, str], template_parameters: dict) -> None:
    assert set(parameters) <= set(template_parameters), set(parameters) - set(template_parameters)
    required = {name for name, p in template_parameters.items() if not p.get("isOptional")}
    assert required <= set(parameters)
    assert parameters["skip_existing"] == "true"
    if parameters.get("gpu") == "true":
        assert parameters.get("sdk_container_image"), "gpu=true needs sdk_container_image"
    for name, value in parameters.items():
        for regex in template_parameters[name].get("regexes", []):
            assert re.fullmatch(regex, value), (name, value, regex)


def test_scheduler_body_is_a_launch_request_with_the_templates_parameters(template_parameters):
    body = read_json(BODY)
    request = _launch_request(body)
    launch = request.launch_parameter
    assert launch.container_spec_gcs_path.startswith("gs://")
    assert launch.environment.temp_location.startswith("gs://")
    _check_parameters(dict(launch.parameters), template_parameters)


def _dag_calls() -> tuple[ast.Module, dict[str, ast.Call]]:
    tree = ast.parse(DAG.read_text(), filename=str(DAG))
    calls = {
        node.func.id: node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    return tree, calls


def _literal_keywords(call: ast.Call) -> dict:
    values = {}
    for keyword in call.keywords:
        try:
            values[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            values[keyword.arg] = keyword.value  # not a literal (a date, say)
    return values


def _render(text: str, variables: dict[str, str]) -> str:
    """The few Jinja expressions the DAG uses, rendered; any other fails the test."""

    def value(match: re.Match) -> str:
        return variables[match.group(1)]

    return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", value, text)


def test_dag_launches_the_same_job_every_night(template_parameters):
    tree, calls = _dag_calls()
    compile(tree, str(DAG), "exec")
    imports = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    operator_module = "airflow.providers.google.cloud.operators.dataflow"
    assert (operator_module, "DataflowStartFlexTemplateOperator") in imports
    assert ("airflow", "DAG") in imports

    dag = _literal_keywords(calls["DAG"])
    minute, hour, *every = dag["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"], "once a night"
    assert dag["catchup"] is False and dag["max_active_runs"] == 1

    operator = _literal_keywords(calls["DataflowStartFlexTemplateOperator"])
    assert set(operator) <= OPERATOR_PARAMETERS, set(operator) - OPERATOR_PARAMETERS
    # The operator refuses this pair when it is built.
    assert not (operator.get("deferrable") and operator.get("wait_until_finished"))

    scheduled = read_json(BODY)["launchParameter"]
    parameters = scheduled["parameters"]
    bucket = parameters["output"].split("/")[2]
    variables = {
        "var.value.captioning_bucket": bucket,
        "var.value.captioning_template": scheduled["containerSpecGcsPath"],
        "var.value.captioning_image": parameters["sdk_container_image"],
        "var.value.captioning_project": "my-project",
        "var.value.captioning_region": "us-central1",
        # The pinned model id, where the launch pins one (expect_model_id).
        "var.value.captioning_model_id": parameters.get("expect_model_id", ""),
        "ds_nodash": "20250101",
    }
    rendered = json.loads(_render(json.dumps(operator["body"]), variables))
    request = _launch_request(rendered)
    _check_parameters(dict(request.launch_parameter.parameters), template_parameters)
    # The same launch as the Cloud Scheduler job's, but for the job's name.
    launch = rendered["launchParameter"]
    assert launch["parameters"] == parameters
    assert launch["environment"] == scheduled["environment"]
    assert launch["containerSpecGcsPath"] == scheduled["containerSpecGcsPath"]
    assert _render(operator["location"], variables) == "us-central1"


def test_the_nightly_launch_builds_the_gpu_job_with_skip_existing(
    tiny_bundle, scenes, tmp_path, monkeypatch, capsys
):
    """Runs the template's entry script with the scheduled parameters (local paths in
    place of gs:// ones), as the flex template launcher would, in a dry run."""
    offline = refuse_network(monkeypatch, tmp_path)
    launch = read_json(BODY)["launchParameter"]
    output = tmp_path / "captions" / "archive"
    # Last night's (committed, empty) captions table: tonight must join against it.
    tables.ensure_table(
        run_layout.captions_table(str(output)),
        run_layout.CAPTIONS_SCHEMA,
        tables.DEFAULT_RETENTION_HOURS,
    )
    parameters = {
        **launch["parameters"],
        "input": str(scenes / "images" / "*.png"),
        "output": str(output),
        "model": tiny_bundle,
    }
    if "expect_model_id" in parameters:  # pinned to the bundle that stands in for the real one
        parameters["expect_model_id"] = read_model_id(tiny_bundle)
    environment = launch["environment"]
    spec_file = tmp_path / "job.json"
    argv = [f"--{name}={value}" for name, value in parameters.items()]
    # What the launcher adds from the request and the launch environment.
    argv += [
        "--project=my-project",
        "--region=us-central1",
        f"--temp_location={environment['tempLocation']}",
        f"--staging_location={environment['stagingLocation']}",
        f"--max_num_workers={environment['maxWorkers']}",
        "--dry_run=true",
        f"--job_spec_out={spec_file}",
    ]
    monkeypatch.setattr(sys, "argv", [str(LAUNCH_SCRIPT), *argv])
    runpy.run_path(str(LAUNCH_SCRIPT), run_name="__main__")
    printed = json.loads(capsys.readouterr().out)
    assert printed["job_spec"] == str(spec_file)
    assert offline == []

    spec = json.loads(spec_file.read_text())
    assert "SkipExisting" in spec["pipeline_steps"]
    job_environment = spec["job"]["environment"]
    assert ACCELERATOR in job_environment["serviceOptions"]
    pool = job_environment["workerPools"][0]
    assert pool["workerHarnessContainerImage"] == parameters["sdk_container_image"]
    assert pool["autoscalingSettings"]["maxNumWorkers"] == environment["maxWorkers"]
    worker_options = job_environment["sdkPipelineOptions"]["options"]
    assert worker_options["skip_existing"] is True and worker_options["gpu"] is True
    assert worker_options["runner"] == "DataflowRunner"
    assert worker_options.get("expect_model_id") == parameters.get("expect_model_id")


@pytest.mark.parametrize(
    "runner_flags",
    [
        ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099"],
        ["--runner", "FlinkRunner", "--flink_master", "localhost:8081"],
        ["--runner", "SparkRunner", "--spark_master_url", "spark://localhost:7077"],
    ],
)
def test_the_readmes_portable_runner_flags_are_beam_options(
    runner_flags, tiny_bundle, scenes, tmp_path, monkeypatch
):
    offline = refuse_network(monkeypatch, tmp_path)
    image = "us-docker.pkg.dev/p/r/captioning-worker:1"
    spec = run(
        [
            "--input",
            str(scenes / "images" / "*.png"),
            "--output",
            str(tmp_path / "captions"),
            "--model",
            tiny_bundle,
            *runner_flags,
            "--environment_type",
            "DOCKER",
            "--environment_config",
            image,
            "--dry_run",
        ]
    )
    assert offline == []
    assert spec["runner"] == runner_flags[1]
    assert spec["options"][runner_flags[2].lstrip("-")] == runner_flags[3]
    assert spec["options"]["environment_type"] == "DOCKER"
    assert spec["options"]["environment_config"] == image
    assert "CaptionImages" in spec["pipeline_steps"]
    readme = (DEPLOY / "schedule" / "README.md").read_text()
    assert runner_flags[2] in readme
