"""The console script: help for every command, one-line errors, predict and evaluate output."""

import json
import os
import subprocess
import sys

import pytest

from captioning.cli.main import main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
COMMANDS = ["synth", "train", "features", "caption", "predict", "evaluate", "explain", "report"]


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "captioning.cli.main", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "usage: captioning " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--captions", "/no/such.csv", "--images", "/tmp", "--out", "/tmp/x"],
            "does not exist",
        ),
        (["predict", "x.png", "--model", "/no/such/bundle"], "does not exist"),
        (
            ["evaluate", "--model", "/no/bundle", "--captions", "/no.csv", "--images", "/tmp"],
            "does not exist",
        ),
        (["synth", "--out", "/tmp/x", "--count", "0"], "--count"),
        (["caption", "--input", "/tmp/*.jpg", "--output", "/tmp/o"], "--model"),
        (
            ["caption", "--input", "/tmp/*.jpg", "--output", "/tmp/o", "--model", "/no/bundle"],
            "not a readable model bundle",
        ),
        (
            ["caption", "--input", "/tmp/*.jpg", "--output", "/tmp/o", "--skip-existng"],
            "unknown option --skip-existng (did you mean --skip-existing?)",
        ),
    ],
)
def test_user_mistakes_print_one_line_and_no_traceback(args, message):
    result = _run(*args)
    assert result.returncode == 2
    # (TensorFlow's own start-up lines may precede it; they are not ours to silence.)
    errors = [line for line in result.stderr.splitlines() if line.startswith("captioning")]
    assert len(errors) == 1 and "error:" in errors[0] and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_synth_then_predict_and_evaluate_json(tiny_bundle, tmp_path):
    assert _run("synth", "--out", str(tmp_path), "--count", "6", "--seed", "9").returncode == 0
    images = sorted((tmp_path / "images").iterdir())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    predicted = _run(
        "predict", str(images[0]), str(tmp_path / "broken.png"), "--model", tiny_bundle, "--json"
    )
    assert predicted.returncode == 1  # one image failed, and says so
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert lines[0]["image"] == str(images[0]) and lines[0]["error"] is None
    assert isinstance(lines[0]["caption"], str) and lines[0]["score"] <= 0
    assert lines[1]["error"].startswith("UnidentifiedImageFormatError")

    evaluated = _run(
        "evaluate",
        "--model",
        tiny_bundle,
        "--captions",
        str(tmp_path / "captions.csv"),
        "--images",
        str(tmp_path / "images"),
        "--json",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == {
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "meteor",
        "rouge_l",
        "cider",
        "count",
    }
    assert metrics["count"] == 6
    assert 0 <= metrics["bleu4"] <= 1
