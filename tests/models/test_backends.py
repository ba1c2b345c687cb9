"""One bundle, two Keras backends: the same captions under TensorFlow and under JAX.

The GPU machine the caption job is measured on has JAX and no TensorFlow, so the JAX
runs also block ``import tensorflow`` outright: a stray import anywhere on the caption
path fails these tests instead of that machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from captioning import run_layout, tables

# Scores are printed to 4 decimals; the backends' float32 kernels differ in the last bits.
SCORE_TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import tensorflow`` fail."""
    folder = tmp_path_factory.mktemp("no_tensorflow")
    (folder / "tensorflow.py").write_text(
        "raise ImportError('tensorflow is blocked: this run must not need it')\n"
    )
    return folder


def _env(backend: str, blocked: Path | None) -> dict[str, str]:
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    if blocked is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(blocked), env.get("PYTHONPATH", "")])
    return env


def _predict(bundle: str, images: list[str], backend: str, blocked: Path | None) -> list[dict]:
    command = [sys.executable, "-m", "captioning.cli.main", "predict", "--json"]
    command += ["--precision", "float32", "--model", bundle, *images]
    done = subprocess.run(
        command, env=_env(backend, blocked), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def on_jax(tiny_bundle, scenes, no_tensorflow) -> list[dict]:
    images = sorted(str(path) for path in (scenes / "images").glob("*.png"))
    return _predict(tiny_bundle, images, "jax", no_tensorflow)


def test_tensorflow_and_jax_give_the_same_captions(tiny_bundle, scenes, on_jax):
    images = sorted(str(path) for path in (scenes / "images").glob("*.png"))
    on_tensorflow = _predict(tiny_bundle, images, "tensorflow", None)
    assert len(on_tensorflow) == len(on_jax) == len(images)
    for tf_row, jax_row in zip(on_tensorflow, on_jax, strict=True):
        assert tf_row["image"] == jax_row["image"]
        assert tf_row["caption"] == jax_row["caption"], tf_row["image"]
        assert abs(tf_row["score"] - jax_row["score"]) <= SCORE_TOLERANCE, (tf_row, jax_row)


def test_the_caption_job_runs_under_jax_without_tensorflow(
    tiny_bundle, scenes, no_tensorflow, on_jax, tmp_path
):
    images = sorted((scenes / "images").glob("*.png"))[:12]
    folder = tmp_path / "images"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    output = tmp_path / "out"
    command = [sys.executable, "-m", "captioning.cli.main", "caption"]
    command += ["--input", str(folder / "*.png"), "--output", str(output)]
    command += ["--model", tiny_bundle, "--precision", "float32"]
    done = subprocess.run(
        command, env=_env("jax", no_tensorflow), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = tables.read(run_layout.captions_table(str(output))).to_pylist()
    captions = {Path(row["image_uri"]).name: row["caption"] for row in rows}
    by_name = {Path(row["image"]).name: row["caption"] for row in on_jax}
    assert captions == {image.name: by_name[image.name] for image in images}
