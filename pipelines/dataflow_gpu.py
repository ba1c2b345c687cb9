"""What a Dataflow job needs to caption on GPUs, in one place.

``--gpu`` with ``--runner DataflowRunner`` fills in each setting below that the
command line left unset (a value you give always wins):

- ``--experiments use_runner_v2``: Dataflow runs GPUs and custom containers only on
  Runner v2. Beam 2.77's DataflowRunner adds it anyway; naming it keeps the job
  description explicit and fails loudly if someone passes ``disable_runner_v2``.
- ``--dataflow_service_options worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver``:
  one NVIDIA L4 per worker, and Dataflow installs the NVIDIA driver on the VM. CUDA
  itself comes in the container (``tensorflow[and-cuda]``). L4 (Ada, compute
  capability 8.9) has bf16, which ``--precision auto`` picks.
- ``--machine_type g2-standard-8``: L4s are attached only to G2 machines. 8 vCPUs read
  images and decode, with Pillow, what the GPU's JPEG decoder cannot take; 32 GB of
  memory holds the queues and the model. With your own
  ``worker_accelerator`` of one GPU the machine follows its type
  (``MACHINE_FOR_GPU``); for other counts give ``--machine_type`` yourself.
- ``--disk_size_gb 50``: the worker image with CUDA libraries is about 10 GB unpacked;
  the batch default with Dataflow Shuffle (25 GB) is too small to pull and unpack it.
- ``--sdk_container_image``: no default. Beam's stock image has no TensorFlow, so a GPU
  job without our image (``deploy/dataflow/Dockerfile``) cannot start; it is an error.
- ``--experiments no_use_multiple_sdk_containers`` and
  ``--number_of_worker_harness_threads 4``: one SDK process per worker holds the model
  and decodes JPEGs on the GPU, so neither pixels nor JPEG bytes cross a process
  boundary on their way to the GPU. The alternative, one SDK process per vCPU sharing
  one model through Beam's ``large_model`` proxy, carries 299x299x3 batches at 1,280
  images/s from one process and 4,400 from 16 (measured on an H100 machine), a
  quarter of what the GPU encodes (17,300). Four harness threads keep reads from GCS
  overlapping with the GPU; files nvImageCodec cannot take go to Pillow in that
  process's decoder pool, whose processes share the worker's cores between threads.

With ``--right-fit`` the GPU is not a worker setting: the inference step alone carries
the resource hint ``accelerator=`` (``ACCELERATOR_HINT``), so listing, reading, CPU
decoding and writing run on CPU workers and only the inference step on GPU workers.
``worker_accelerator`` is then left unset (Dataflow's right fitting refuses both), and
so is ``--machine_type``, which sizes the CPU workers; the hint names the GPU
workers' machine.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    WorkerOptions,
)

from captioning.errors import UserError

GPU_TYPE = "nvidia-l4"
GPU_COUNT = 1
ACCELERATOR_OPTION = "worker_accelerator"
ACCELERATOR = f"{ACCELERATOR_OPTION}=type:{GPU_TYPE};count:{GPU_COUNT};install-nvidia-driver"
MACHINE_TYPE = "g2-standard-8"
DISK_SIZE_GB = 50
EXPERIMENTS = ("use_runner_v2", "no_use_multiple_sdk_containers")
HARNESS_THREADS = 4
# The accelerator resource hint of --right-fit: the same GPU and machine as above.
ACCELERATOR_HINT = (
    f"type:{GPU_TYPE};count:{GPU_COUNT};machine_type:{MACHINE_TYPE};install-nvidia-driver"
)
# The machine family each GPU type attaches to, for one GPU per worker.
MACHINE_FOR_GPU = {
    "nvidia-l4": "g2-standard-8",
    "nvidia-tesla-t4": "n1-standard-8",
    "nvidia-tesla-v100": "n1-standard-8",
    "nvidia-tesla-p100": "n1-standard-8",
    "nvidia-tesla-p4": "n1-standard-8",
    "nvidia-tesla-a100": "a2-highgpu-1g",
}


def accelerator_settings(service_options: list[str]) -> dict[str, str] | None:
    """The ``worker_accelerator`` service option as a dict (``type``, ``count``, and
    the bare words such as ``install-nvidia-driver`` mapped to ""), or None."""
    for option in service_options:
        name, _, value = option.partition("=")
        if name.strip() == ACCELERATOR_OPTION:
            settings = {}
            for part in value.split(";"):
                key, _, setting = part.partition(":")
                if key.strip():
                    settings[key.strip()] = setting.strip()
            return settings
    return None


def apply_gpu_worker_defaults(options: PipelineOptions, right_fit: bool = False) -> dict[str, Any]:
    """Fill in the GPU worker settings the user left unset; returns what was filled
    (option name -> value). Raises UserError for a GPU job that cannot start.
    ``right_fit`` leaves the GPU to the inference step's resource hint."""
    cloud = options.view_as(GoogleCloudOptions)
    worker = options.view_as(WorkerOptions)
    debug = options.view_as(DebugOptions)
    filled: dict[str, Any] = {}

    if not (worker.sdk_container_image or worker.worker_harness_container_image):
        raise UserError(
            "--gpu on DataflowRunner needs --sdk_container_image IMAGE: Beam's default "
            "worker image has no TensorFlow or CUDA (build deploy/dataflow/Dockerfile)"
        )
    for experiment in EXPERIMENTS:
        if not debug.lookup_experiment(experiment):
            debug.add_experiment(experiment)
            filled.setdefault("experiments", []).append(experiment)

    if debug.number_of_worker_harness_threads is None:
        debug.number_of_worker_harness_threads = HARNESS_THREADS
        filled["number_of_worker_harness_threads"] = HARNESS_THREADS
    if not worker.disk_size_gb:
        worker.disk_size_gb = DISK_SIZE_GB
        filled["disk_size_gb"] = DISK_SIZE_GB

    service_options = list(cloud.dataflow_service_options or [])
    accelerator = accelerator_settings(service_options)
    if right_fit:
        if accelerator is not None:
            raise UserError(
                "--right-fit puts the GPU on the inference step (a resource hint); drop "
                "the worker_accelerator service option, which would put it on every worker"
            )
        return filled
    if accelerator is None:
        service_options.append(ACCELERATOR)
        cloud.dataflow_service_options = service_options
        filled["dataflow_service_options"] = [ACCELERATOR]
        accelerator = accelerator_settings([ACCELERATOR])

    if not worker.machine_type:
        gpu_type = accelerator.get("type", "")
        machine = MACHINE_FOR_GPU.get(gpu_type) if accelerator.get("count", "1") == "1" else None
        if machine is None:
            raise UserError(
                f"give --machine_type for {accelerator.get('count', '1')} x {gpu_type or '?'} "
                "GPUs per worker (see Dataflow's GPU platforms for the machines they attach to)"
            )
        worker.machine_type = machine
        filled["machine_type"] = machine
    return filled
