"""Helpers of the nightly-safety tests: real `captioning caption` processes, held or killed
at named points, and the committed tables read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from captioning import run_layout, tables

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """A `captioning caption` process whose stderr is collected as it comes."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                self._reader.join(5)
                if any(text in line for line in self.lines):
                    return
                raise AssertionError(f"run ended before {text!r}:\n" + "\n".join(self.lines))
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def finish(self, timeout: float = 300.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def start(args: list[str], hold: str | None = None, command: str = "caption") -> Run:
    """``captioning COMMAND ARGS`` in a process of its own; ``hold`` sets the commit
    step's test hold (``pipelines.commit_tables.hold_for_test``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("CAPTIONING_TEST_HOLD", None)
    if hold:
        env["CAPTIONING_TEST_HOLD"] = hold
    process = subprocess.Popen(
        [sys.executable, "-m", "captioning.cli.main", command, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    return Run(process)


def caption(args: list[str]) -> tuple[int, str]:
    run = start(args)
    return run.finish(), run.stderr


def committed(output: Path) -> tuple[dict[str, object], list[str]]:
    """The committed captions ({uri: captioned_at}, checked for duplicates) and error URIs."""
    captions = tables.read(
        run_layout.captions_table(str(output)), columns=["image_uri", "captioned_at"]
    ).to_pydict()
    uris = captions["image_uri"]
    assert len(uris) == len(set(uris)), f"duplicate caption rows: {sorted(uris)}"
    errors = tables.read(run_layout.errors_table(str(output)), columns=["image_uri"])
    return dict(zip(uris, captions["captioned_at"], strict=True)), errors.column(
        "image_uri"
    ).to_pylist()


def assert_exactly_once(output: Path, expected: set[str]) -> dict[str, object]:
    """Every expected input is in exactly one of the two committed tables."""
    captions, errors = committed(output)
    assert len(errors) == len(set(errors)), f"duplicate error rows: {sorted(errors)}"
    assert not set(captions) & set(errors), "an input is in both tables"
    assert set(captions) | set(errors) == expected
    return captions
