"""The GPU caption job for Dataflow, described by a dry run: Beam's own job description,
made with no credentials and no network."""

from __future__ import annotations

import json
import logging

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import resources
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format

from captioning.cli.main import main
from captioning.errors import UserError
from pipelines import dataflow_gpu
from pipelines.caption_pipeline import run
from pipelines.options import normalize_dry_run
from tests.deploy.offline import refuse_network

IMAGE = "us-central1-docker.pkg.dev/my-project/captioning/captioning-worker:test"
DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--project",
    "my-project",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://my-bucket/tmp",
]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    return refuse_network(monkeypatch, tmp_path)


def _inputs(scenes, tiny_bundle, tmp_path) -> list[str]:
    return [
        "--input",
        str(scenes / "images" / "*.png"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        tiny_bundle,
    ]


def test_gpu_dry_run_writes_the_dataflow_job(scenes, tiny_bundle, tmp_path, offline):
    spec_file = tmp_path / "job.json"
    argv = [
        "caption",
        *_inputs(scenes, tiny_bundle, tmp_path),
        "--gpu",
        *DATAFLOW,
        "--sdk_container_image",
        IMAGE,
        "--dry_run",
        "--job-spec-out",
        str(spec_file),
    ]
    assert main(argv) == 0
    assert offline == []
    spec = json.loads(spec_file.read_text())

    # The job is a valid Dataflow API Job, as projects.locations.jobs.create takes it.
    job = dataflow.Job.from_json(json.dumps(spec["job"]))
    assert job.type_ == dataflow.JobType.JOB_TYPE_BATCH
    environment = job.environment
    assert dataflow_gpu.ACCELERATOR in environment.service_options
    assert "use_runner_v2" in environment.experiments
    (pool,) = environment.worker_pools
    assert pool.machine_type == dataflow_gpu.MACHINE_TYPE
    assert pool.disk_size_gb == dataflow_gpu.DISK_SIZE_GB
    assert pool.worker_harness_container_image == IMAGE
    assert [image.container_image for image in pool.sdk_harness_container_images] == [IMAGE]
    worker_options = spec["job"]["environment"]["sdkPipelineOptions"]["options"]
    assert worker_options["gpu"] is True
    assert worker_options["model"] == tiny_bundle

    # The pipeline a Runner v2 job runs: ours, in our container, as it would be staged.
    pipeline = json_format.ParseDict(spec["pipeline"], beam_runner_api_pb2.Pipeline())
    steps = spec["pipeline_steps"]
    order = ["ListInputs", "ReadImages", "DecodeImages", "CaptionImages", "WriteCaptions"]
    assert [step for step in steps if step in order] == order
    # Both tables' files are written before the one step that commits them.
    assert steps.index("WriteErrors") < steps.index("CommitTables")
    assert steps.index("WriteCaptions") < steps.index("CommitTables")
    names = [t.unique_name for t in pipeline.components.transforms.values()]
    assert any(name.startswith("CaptionImages/") and "RunInference" in name for name in names)
    for environment_proto in pipeline.components.environments.values():
        payload = beam_runner_api_pb2.DockerPayload.FromString(environment_proto.payload)
        assert payload.container_image == IMAGE
    staged_pipeline = worker_options["pipelineUrl"]
    assert (
        staged_pipeline.startswith("gs://my-bucket/tmp/")
        and staged_pipeline in spec["staged_files"]
    )
    assert spec["staged_files"][staged_pipeline]["sha256"] == worker_options["pipelineProtoHash"]

    assert spec["captioning"]["precision"] == "auto"
    assert spec["captioning"]["max_batch_size"] == 128
    assert set(spec["captioning"]["gpu_settings_filled_in"]) == {
        "experiments",
        "dataflow_service_options",
        "machine_type",
        "disk_size_gb",
        "number_of_worker_harness_threads",
    }
    # One SDK process per GPU worker holds the model: no large_model proxy between them.
    assert "no_use_multiple_sdk_containers" in environment.experiments
    assert worker_options["number_of_worker_harness_threads"] == dataflow_gpu.HARNESS_THREADS
    assert spec["captioning"]["decode_device"] == "gpu"
    assert "RouteImages" in steps
    assert not _hinted_transforms(pipeline), "without --right-fit no step carries a hint"


def test_a_nightly_job_over_buckets_is_described_without_touching_them(
    tiny_bundle, tmp_path, offline
):
    """gs:// input, manifest and output as a real nightly run has them: the dry run does
    not look whether earlier captions exist; --skip-existing puts the join in the job."""
    spec_file = tmp_path / "job.json"
    argv = [
        "caption",
        *("--input", "gs://my-bucket/photos/**", "--input-manifest", "gs://my-bucket/new.txt"),
        *("--output", "gs://my-bucket/captions/nightly", "--model", tiny_bundle),
        *("--skip-existing", "--gpu", *DATAFLOW, "--sdk_container_image", IMAGE),
        *("--dry_run", "--job-spec-out", str(spec_file)),
    ]
    assert main(argv) == 0
    assert offline == []
    spec = json.loads(spec_file.read_text())
    steps = spec["pipeline_steps"]
    assert steps.index("ListInputs") < steps.index("SkipExisting") < steps.index("ReadImages")
    worker_options = spec["job"]["environment"]["sdkPipelineOptions"]["options"]
    assert worker_options["output"] == "gs://my-bucket/captions/nightly"  # the DIR, as given
    assert "CommitTables" in steps


def test_settings_given_on_the_command_line_win_over_the_gpu_defaults(
    scenes, tiny_bundle, tmp_path, offline
):
    t4 = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    spec = run(
        [
            *_inputs(scenes, tiny_bundle, tmp_path),
            "--gpu",
            *DATAFLOW,
            "--sdk_container_image",
            IMAGE,
            "--dataflow_service_options",
            t4,
            "--disk_size_gb",
            "120",
            "--max_num_workers",
            "5",
            "--dry_run=true",
        ]
    )
    assert offline == []
    environment = spec["job"]["environment"]
    assert environment["serviceOptions"] == [t4]
    pool = environment["workerPools"][0]
    # T4s attach to N1 machines; an L4's G2 machine would not start.
    assert pool["machineType"] == dataflow_gpu.MACHINE_FOR_GPU["nvidia-tesla-t4"]
    assert pool["diskSizeGb"] == 120
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 5
    assert set(spec["captioning"]["gpu_settings_filled_in"]) == {
        "experiments",
        "machine_type",
        "number_of_worker_harness_threads",
    }


def _hinted_transforms(pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, dict]:
    """Leaf transforms whose environment asks for an accelerator (Beam keeps a step's
    resource hints on the environment it runs in)."""
    environments = pipeline.components.environments
    hinted = {}
    for transform in pipeline.components.transforms.values():
        if transform.subtransforms or not transform.environment_id:
            continue
        hints = dict(environments[transform.environment_id].resource_hints)
        if resources.AcceleratorHint.urn in hints:
            hinted[transform.unique_name] = hints
    return hinted


def test_right_fit_puts_the_gpu_on_the_inference_step_only(scenes, tiny_bundle, tmp_path, offline):
    spec = run(
        [
            *_inputs(scenes, tiny_bundle, tmp_path),
            *("--gpu", "--right-fit", *DATAFLOW, "--sdk_container_image", IMAGE),
            "--dry_run",
        ]
    )
    assert offline == []
    environment = spec["job"]["environment"]
    # Right fitting and the worker_accelerator service option exclude each other.
    assert not any("worker_accelerator" in o for o in environment.get("serviceOptions", []))
    assert "machineType" not in environment["workerPools"][0]
    assert spec["captioning"]["right_fit"] is True
    pipeline = json_format.ParseDict(spec["pipeline"], beam_runner_api_pb2.Pipeline())
    hinted = _hinted_transforms(pipeline)
    assert hinted, "no step asks for the GPU"
    for name, hints in hinted.items():
        assert name.startswith("CaptionImages/RunInference/"), name
        assert hints[resources.AcceleratorHint.urn] == dataflow_gpu.ACCELERATOR_HINT.encode()
    # The step that runs the model is among them; reading, decoding and writing are not.
    assert any("BeamML_RunInference" in name or "RunInference/" in name for name in hinted)


def test_right_fit_refuses_worker_accelerator(tmp_path, offline):
    argv = ["--input", "x", "--output", "y", "--model", "z", "--gpu", "--right-fit"]
    argv += [*DATAFLOW, "--sdk_container_image", IMAGE, "--dry_run"]
    argv += ["--dataflow_service_options", dataflow_gpu.ACCELERATOR]
    with pytest.raises(UserError, match="drop the worker_accelerator"):
        run(argv)


def test_a_dry_run_with_a_bundle_in_a_bucket_stays_offline(tmp_path, offline):
    spec = run(
        [
            *("--input", "gs://my-bucket/photos/*.jpg", "--output", "gs://my-bucket/out"),
            *("--model", "gs://my-bucket/models/bundle", "--gpu", *DATAFLOW),
            *("--sdk_container_image", IMAGE, "--expect-model-id", "abc123", "--dry_run"),
        ]
    )
    assert offline == []
    assert spec["captioning"]["model_id"] == "abc123"
    worker_options = spec["job"]["environment"]["sdkPipelineOptions"]["options"]
    assert worker_options["model"] == "gs://my-bucket/models/bundle"


def test_gpu_on_a_machine_without_one_warns(scenes, tiny_bundle, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="captioning.pipeline"):
        spec = run([*_inputs(scenes, tiny_bundle, tmp_path), "--gpu", "--dry_run"])
    assert "--gpu, but no GPU is visible on this machine" in caplog.text
    assert spec["captioning"]["decode_device"] == "cpu"  # auto: no nvImageCodec GPU here


def test_without_gpu_the_job_has_no_accelerator(scenes, tiny_bundle, tmp_path, offline):
    spec = run([*_inputs(scenes, tiny_bundle, tmp_path), *DATAFLOW, "--dry_run"])
    environment = spec["job"]["environment"]
    assert "serviceOptions" not in environment
    assert "machineType" not in environment["workerPools"][0]
    assert spec["captioning"]["max_batch_size"] == 64


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sdk_container_image", IMAGE], "DataflowRunner needs --temp_location"),
        (["--temp_location", "gs://my-bucket/tmp"], "needs --sdk_container_image"),
        (
            [
                "--temp_location",
                "gs://my-bucket/tmp",
                "--sdk_container_image",
                IMAGE,
                "--dataflow_service_options",
                "worker_accelerator=type:nvidia-tesla-t4;count:2;install-nvidia-driver",
            ],
            "give --machine_type for 2 x nvidia-tesla-t4",
        ),
    ],
)
def test_a_gpu_job_that_could_not_start_is_a_user_error(extra, message, tmp_path, offline):
    argv = ["--input", "x", "--output", "y", "--model", "z", "--gpu", "--dry_run"]
    argv += ["--runner", "DataflowRunner", "--project", "p-1234", "--region", "r", *extra]
    with pytest.raises(UserError, match=message):
        run(argv)
    assert offline == []


def test_gpu_defaults_fill_only_what_is_unset():
    options = PipelineOptions(
        ["--sdk_container_image", IMAGE, "--machine_type", "g2-standard-16", "--experiments", "x"]
    )
    filled = dataflow_gpu.apply_gpu_worker_defaults(options)
    assert filled == {
        "experiments": ["use_runner_v2", "no_use_multiple_sdk_containers"],
        "dataflow_service_options": [dataflow_gpu.ACCELERATOR],
        "disk_size_gb": dataflow_gpu.DISK_SIZE_GB,
        "number_of_worker_harness_threads": dataflow_gpu.HARNESS_THREADS,
    }
    everything = options.get_all_options()
    assert everything["machine_type"] == "g2-standard-16"
    experiments = {"x", "use_runner_v2", "no_use_multiple_sdk_containers"}
    assert set(everything["experiments"]) == experiments
    assert dataflow_gpu.accelerator_settings(everything["dataflow_service_options"]) == {
        "type": "nvidia-l4",
        "count": "1",
        "install-nvidia-driver": "",
    }


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--dry_run", "--job-spec-out", "f"], ["--dry_run=True", "--job-spec-out", "f"]),
        (["--a", "--dry_run"], ["--a", "--dry_run=True"]),
        (["--dry_run", "True"], ["--dry_run=True"]),
        (["--dry_run", "false", "--a"], ["--a"]),
        (["--dry_run=no"], []),
    ],
)
def test_dry_run_is_a_yes_no_flag(argv, expected):
    assert normalize_dry_run(argv) == expected


def test_a_dry_run_value_that_is_not_yes_or_no_is_a_user_error():
    with pytest.raises(UserError, match="--dry_run"):
        normalize_dry_run(["--dry_run=maybe"])


def test_the_caption_help_states_the_gpu_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["caption", "--help"])
    text = capsys.readouterr().out
    assert dataflow_gpu.ACCELERATOR in text
    assert f"--machine_type {dataflow_gpu.MACHINE_TYPE}" in text
    assert f"--disk_size_gb {dataflow_gpu.DISK_SIZE_GB}" in text
    assert "--experiments use_runner_v2" in text
