"""The Vertex AI training job specs: valid CustomJobSpecs whose arguments the train
command accepts, with machines and GPUs that fit together and the cluster the strategy
expects."""

from __future__ import annotations

import pytest
from google.cloud import aiplatform_v1 as aiplatform
from google.protobuf import json_format

from captioning.cli.main import build_parser
from tests.deploy.conftest import DEPLOY, read_yaml

SPECS = {
    "single": DEPLOY / "training" / "vertex_single_machine.yaml",
    "multi": DEPLOY / "training" / "vertex_multi_worker.yaml",
}
# How many L4s each G2 machine type comes with (Compute Engine's G2 machine series).
G2_L4_COUNT = {
    "g2-standard-4": 1,
    "g2-standard-8": 1,
    "g2-standard-12": 1,
    "g2-standard-16": 1,
    "g2-standard-32": 1,
    "g2-standard-24": 2,
    "g2-standard-48": 4,
    "g2-standard-96": 8,
}
# Vertex AI's task type for each worker pool, by position (it writes these into TF_CONFIG).
VERTEX_TASK_TYPES = ("chief", "worker", "ps", "evaluator")


def _spec(name: str):
    message = aiplatform.CustomJobSpec.pb(aiplatform.CustomJobSpec())
    json_format.ParseDict(read_yaml(SPECS[name]), message)  # unknown fields, bad enums raise
    return message


def _train_args(pool):
    args = build_parser().parse_args(list(pool.container_spec.args))
    assert args.command == "train"
    return args


@pytest.mark.parametrize("name", SPECS)
def test_each_spec_is_a_custom_job_the_train_command_accepts(name):
    spec = _spec(name)
    assert spec.worker_pool_specs
    for pool in spec.worker_pool_specs:
        machine = pool.machine_spec
        assert machine.accelerator_type == aiplatform.AcceleratorType.NVIDIA_L4
        assert machine.accelerator_count == G2_L4_COUNT[machine.machine_type]
        assert pool.container_spec.image_uri.endswith(":TAG")
        args = _train_args(pool)
        assert args.out.startswith("gs://") and args.run_dir.startswith("gs://")
        assert args.precision == "auto"


def test_the_single_machine_job_mirrors_over_its_gpus():
    spec = _spec("single")
    (pool,) = spec.worker_pool_specs
    assert pool.replica_count == 1
    assert pool.machine_spec.accelerator_count > 1
    assert _train_args(pool).strategy == "mirrored"


def test_the_multi_worker_job_is_one_cluster_of_identical_trainers():
    from captioning.training.strategy import training_task_count

    spec = _spec("multi")
    pools = list(spec.worker_pool_specs)
    # Pools 2 and 3 would be parameter servers and evaluators, which do not train.
    assert len(pools) == 2 and pools[0].replica_count == 1 and pools[1].replica_count >= 1
    assert all(_train_args(pool).strategy == "multiworker" for pool in pools)
    assert pools[0].container_spec == pools[1].container_spec
    assert pools[0].machine_spec == pools[1].machine_spec
    assert spec.scheduling.restart_job_on_worker_restart
    assert _train_args(pools[0]).features.startswith("gs://")

    # TF_CONFIG as Vertex AI writes it for this spec: every replica is a trainer.
    cluster = {
        VERTEX_TASK_TYPES[index]: [f"{VERTEX_TASK_TYPES[index]}-{i}:2222" for i in range(n)]
        for index, n in enumerate(pool.replica_count for pool in pools)
    }
    tf_config = {"cluster": cluster, "task": {"type": "chief", "index": 0}}
    assert training_task_count(tf_config) == sum(pool.replica_count for pool in pools)
