"""Paths and parsed files of deploy/, shared by its tests."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import CaptionOptions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def caption_option_actions() -> dict[str, argparse.Action]:
    """The caption job's own options, by argparse dest."""
    parser = argparse.ArgumentParser()
    CaptionOptions._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def beam_option_names() -> set[str]:
    """Every option any PipelineOptions class defines (Beam's and ours), by dest."""
    return set(PipelineOptions([]).get_all_options())


@pytest.fixture(scope="session")
def metadata() -> dict:
    return read_json(DEPLOY / "dataflow" / "metadata.json")


@pytest.fixture(scope="session")
def template_parameters(metadata) -> dict[str, dict]:
    return {parameter["name"]: parameter for parameter in metadata["parameters"]}
