"""Shared fixtures: tiny synthetic scenes and a tiny trained bundle, made once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from captioning.data.synthetic_scenes import generate_scenes


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """40 synthetic scenes: DIR/images/*.png and DIR/captions.csv."""
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, count=40, seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, scenes):
    """A bundle trained for one epoch with the tiny preset (seconds, not minutes)."""
    import dataclasses

    from captioning.presets import tiny
    from captioning.training.trainer import train

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    config = dataclasses.replace(tiny(), epochs=1)
    result = train(str(scenes / "captions.csv"), str(scenes / "images"), str(out), config)
    return result.bundle
