"""Numeric precision policies: float32, mixed bfloat16, mixed float16.

``auto`` picks bf16 where the hardware runs it natively (CPUs with AMX or
AVX512-BF16, NVIDIA GPUs from Ampere on), fp16 on older GPUs, else float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

# Keras is imported where it is used: the CLI's parsers read CHOICES, and --help must not
# wait for a backend to load.
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CHOICES = ("auto", *POLICIES)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str) -> str:
    """Map a user choice (including ``auto``) to a Keras dtype policy name."""
    if name in POLICIES:
        return name
    if name != "auto":
        raise ValueError(f"unknown precision {name!r}; choose from {', '.join(CHOICES)}")
    major = gpu_compute_capability()
    if major is not None:
        return "mixed_bfloat16" if major >= 8 else "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def gpu_compute_capability() -> int | None:
    """The major compute capability of the first GPU the Keras backend sees, or None."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        if not gpus:
            return None
        return int(str(getattr(gpus[0], "compute_capability", "0")).split(".")[0])
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("compute_capability", (0, 0))[0]


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a dtype policy without leaking it to the rest of the process."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(name))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
