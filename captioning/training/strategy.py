"""Choosing a tf.distribute strategy, and splitting one CPU into logical devices."""

from __future__ import annotations

import os

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "one")


def split_cpu(count: int) -> None:
    """Expose the CPU as ``count`` logical devices, so MirroredStrategy can run
    ``count`` replicas here. Must run before TensorFlow initialises its devices."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """``auto``: MultiWorkerMirrored when TF_CONFIG describes a cluster, else Mirrored
    over every visible GPU, or over every logical CPU device when there is no GPU.

    With a single device, ``auto`` and ``mirrored`` use TensorFlow's default strategy:
    one replica either way, without MirroredStrategy's per-device input iterators,
    which cost ~40 s at epoch boundaries here and can deadlock when destroyed.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"unknown strategy {kind!r}; choose from {', '.join(STRATEGIES)}")
    if kind == "multiworker" or (kind == "auto" and "TF_CONFIG" in os.environ):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]
    if kind == "one":
        return tf.distribute.OneDeviceStrategy(devices[0])
    if len(devices) == 1:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices=devices)
