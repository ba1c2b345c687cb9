"""The training job end to end at tiny size: CLI, resume after a kill, feature cache."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.bundle import load_bundle
from captioning.training.history import HISTORY_CSV, HISTORY_PNG, read_history

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _train_command(scenes, out, *extra):
    return [
        sys.executable,
        "-m",
        "captioning.cli.main",
        "train",
        "--captions",
        str(scenes / "captions.csv"),
        "--images",
        str(scenes / "images"),
        "--out",
        str(out),
        "--preset",
        "tiny",
        *extra,
    ]


def test_tiny_bundle_captions_images(tiny_bundle, scenes):
    bundle = load_bundle(tiny_bundle)
    assert bundle.config.image.image_size == 75
    pixels = np.zeros((2, 75, 75, 3), np.uint8)
    result = bundle.captioner.generate(pixels)
    assert result.tokens.shape[0] == 2
    run = Path(tiny_bundle + ".run")
    assert json.loads((run / "train_config.json").read_text())["epochs"] == 1
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    # Training curves beside the bundle: the per-epoch CSV and its plot.
    history = read_history(run / HISTORY_CSV)
    assert history["epoch"] == [0.0] and {"loss", "val_loss"} <= set(history)
    with Image.open(run / HISTORY_PNG) as plot:
        assert plot.format == "PNG" and plot.width > 300


def test_killed_training_resumes_from_its_checkpoint(scenes, tmp_path):
    out = tmp_path / "bundle"
    state = tmp_path / "bundle.run" / "run_state.json"
    command = _train_command(scenes, out, "--epochs", "40", "--batch-size", "4")
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state.read_text())
    assert 1 <= killed_at["epoch"] < 40
    assert not (out / "manifest.json").exists()

    finished = subprocess.run(
        _train_command(scenes, out, "--epochs", str(killed_at["epoch"] + 2), "--batch-size", "4"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    resumed = summary["resumed_from"]
    # The restored checkpoint is at an epoch boundary at or after the one we saw.
    assert resumed is not None and resumed["epoch"] >= killed_at["epoch"]
    steps_per_epoch = killed_at["step"] // killed_at["epoch"]
    assert resumed["step"] == resumed["epoch"] * steps_per_epoch
    assert "resumed from checkpoint" in finished.stderr
    # Only the remaining epochs ran.
    assert summary["epochs_run"] == killed_at["epoch"] + 2 - resumed["epoch"]
    assert (out / "manifest.json").exists()


def test_frozen_backbone_features_are_cached_and_reused(scenes, tmp_path):
    cache = tmp_path / "features"
    runs = []
    for name in ("first", "second"):
        result = subprocess.run(
            _train_command(
                scenes,
                tmp_path / name,
                "--no-trainable-backbone",
                "--epochs",
                "1",
                "--feature-cache",
                str(cache),
            ),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(result.stderr)
    assert "computing features" in runs[0]
    assert "features cache hit" in runs[1] and "computing features" not in runs[1]
    assert len(list(cache.iterdir())) == 2  # train and val


def test_examples_stay_in_memory_only_when_they_fit():
    from types import SimpleNamespace

    from captioning.training.trainer import _keep_in_memory

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    small = SimpleNamespace(images=["a"] * 10, shape=(8, 8, 16), dtype="float16")
    # One more 8x8x2048 float16 feature grid (256 KiB, InceptionV3 at 299 px) than fits in RAM/4.
    huge = SimpleNamespace(images=["a"] * (ram // (4 * 8 * 8 * 2048 * 2) + 1), shape=(8, 8, 2048))
    huge.dtype = "float16"
    assert _keep_in_memory("auto", small, True)
    assert not _keep_in_memory("auto", huge, True)
    assert _keep_in_memory("memory", huge, True)
    assert not _keep_in_memory("disk", small, False)
