"""Choosing a tf.distribute strategy from the environment, and this process's role in it.

- Several machines: the platform (Vertex AI, Kubernetes, a hand-written launcher) sets
  ``TF_CONFIG`` with a cluster of more than one task -> ``MultiWorkerMirroredStrategy``.
- One machine: ``MirroredStrategy`` over its GPUs (or over logical CPU devices made by
  ``split_cpu``), and TensorFlow's default strategy when there is a single device.

``--strategy`` overrides the choice. In a multi-worker run every worker trains, but
only the chief writes shared state (checkpoints, TensorBoard logs, the bundle); see
``WorkerRole``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from captioning.errors import UserError

STRATEGIES = ("auto", "mirrored", "multiworker", "one")
# The task types that train; "ps" and "evaluator" belong to other strategies.
TRAINING_TASK_TYPES = ("chief", "worker")


def split_cpu(count: int) -> None:
    """Expose the CPU as ``count`` logical devices, so MirroredStrategy can run
    ``count`` replicas here. Must run before TensorFlow initialises its devices."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def cluster_from_environment() -> dict | None:
    """``TF_CONFIG`` parsed, or None when it is unset. A malformed one is a user error:
    guessing would silently train single-machine on every worker."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        cluster = tf_config["cluster"]
        task = tf_config["task"]
        if task["type"] not in cluster or not isinstance(task["index"], int):
            raise ValueError(f"task {task} is not in the cluster")
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"TF_CONFIG is not a valid cluster description: {error}") from None
    return tf_config


def training_task_count(tf_config: dict | None) -> int:
    if not tf_config:
        return 0
    cluster = tf_config["cluster"]
    return sum(len(cluster.get(kind, [])) for kind in TRAINING_TASK_TYPES)


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """``auto``: MultiWorkerMirrored when TF_CONFIG describes more than one training
    task, else Mirrored over every visible GPU, or over every logical CPU device when
    there is no GPU.

    With a single device, ``auto`` and ``mirrored`` use TensorFlow's default strategy:
    one replica either way, without MirroredStrategy's per-device input iterators,
    which cost ~40 s at epoch boundaries here and can deadlock when destroyed.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"unknown strategy {kind!r}; choose from {', '.join(STRATEGIES)}")
    tf_config = cluster_from_environment()
    if kind == "multiworker" and tf_config is None:
        raise UserError(
            "--strategy multiworker needs TF_CONFIG describing the cluster "
            "(Vertex AI and Kubernetes operators set it)"
        )
    if kind == "multiworker" or (kind == "auto" and training_task_count(tf_config) > 1):
        return _MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]
    if kind == "one":
        return tf.distribute.OneDeviceStrategy(devices[0])
    if len(devices) == 1:
        return tf.distribute.get_strategy()
    return _MirroredStrategy(devices=devices)


class _KerasReduce:
    """``reduce`` as Keras 3's ``fit`` calls it, for the strategies below.

    Two calls in Keras 3.15 fail with several replicas (keras-team/keras#20329):

    - ``fit``/``evaluate`` reduce a whole input batch (a tuple of dicts) only to learn
      its shapes before building. The collective implementation takes one tensor per
      call, and the last validation batch differs in size between replicas, so no
      reduction can answer; this replica's own batch has the shapes asked for.
    - every step's scalar loss is reduced with ``axis=0``; scalars are reduced across
      replicas only.
    """

    def reduce(self, reduce_op, value, axis):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(
                lambda leaf: self.experimental_local_results(leaf)[0], value
            )
        local = self.experimental_local_results(value)[0]
        if axis is not None and local.shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


class _MirroredStrategy(_KerasReduce, tf.distribute.MirroredStrategy):
    pass


class _MultiWorkerMirroredStrategy(_KerasReduce, tf.distribute.MultiWorkerMirroredStrategy):
    pass


@dataclass(frozen=True)
class WorkerRole:
    """Which task this process is. Single-machine runs are their own chief."""

    task_type: str | None = None
    task_id: int = 0
    is_chief: bool = True

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.task_id}" if self.task_type else "chief"


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
    """The chief is task "chief", or "worker" 0 when the cluster has no chief task
    (the convention of TensorFlow's multi-worker tutorial and of Vertex AI)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return WorkerRole()
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    jobs = resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in jobs
    )
    return WorkerRole(task_type, task_id, is_chief)


def synchronize_batch_norm(model, enabled: bool = True) -> int:
    """Switch every BatchNormalization layer of ``model`` to global-batch statistics
    (Keras' ``synchronized``); returns how many layers there are.

    With several replicas each one otherwise normalises over its own slice of the batch
    and updates its own moving mean and variance, so the replicas' models drift apart and
    the chief exports statistics of its share of the data alone. The flag is read when
    the layer is called, so it can be set on a built model (and cleared before export).
    """
    import keras

    def nested(layer):
        for inner in getattr(layer, "layers", []):
            yield inner
            yield from nested(inner)

    layers = [
        layer for layer in nested(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.synchronized = enabled
    return len(layers)
