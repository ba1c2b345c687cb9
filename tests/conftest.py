"""Shared fixtures: tiny synthetic scenes and a tiny trained bundle, made once per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from captioning.data.synthetic_scenes import generate_scenes

# Some tests need system packages (Java for the COCO toolkit, Chromium for the report).
# Elsewhere they skip, saying what to install; CI installs them (.ci/run) and sets this,
# so there a missing package fails the run instead of skipping.
REQUIRE_SYSTEM_PACKAGES = bool(os.environ.get("CAPTIONING_REQUIRE_SYSTEM_PACKAGES"))


def needs_java(what: str):
    """Skip, unless CI, when Java is missing; ``what`` says what runs on Java."""
    return pytest.mark.skipif(
        shutil.which("java") is None and not REQUIRE_SYSTEM_PACKAGES,
        reason=f"{what} runs on Java, which is not installed (apt-get install "
        "default-jre-headless; .ci/run installs it)",
    )


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


GCS_BUCKET = "captioning-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A local GCS emulator (gcp-storage-emulator) on loopback; yields its bucket.
    google-cloud-storage clients made while it runs talk to it."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=GCS_BUCKET)
    server.start()
    patch = pytest.MonkeyPatch()
    patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    patch.setenv("NO_GCE_CHECK", "true")  # no metadata-server probe for credentials
    patch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    from google.cloud import storage

    client = storage.Client.create_anonymous_client()
    yield client.bucket(GCS_BUCKET)
    patch.undo()
    server.stop()


# The emulator serves one request at a time with a listen backlog of 5; Beam's and
# delta-rs' parallel requests from two processes overflow that and time out. Threads.
_EMULATOR_PROCESS = """
import http.server, time
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256
http.server.HTTPServer = Server
from gcp_storage_emulator.server import create_server
create_server("127.0.0.1", {port}, in_memory=True, default_bucket="{bucket}").start()
while True:
    time.sleep(60)
"""


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture(scope="module")
def gcs_process():
    """The GCS emulator and an XML API front end (``tests.gcs_xml_api``), each in a process
    of its own, for tests whose tables are on gs://: delta-rs reaches GCS through the XML
    API, and holds the GIL while it waits, so an in-process server (``gcs``) never answers
    it. Yields the bucket (a google-cloud-storage client's, JSON API)."""
    port = _free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _EMULATOR_PROCESS.format(port=port, bucket=GCS_BUCKET),
        ]
    )
    emulator_url = f"http://127.0.0.1:{port}"
    _wait_until_up(emulator_url)
    env = dict(
        os.environ,
        STORAGE_EMULATOR_HOST=emulator_url,
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    front = subprocess.Popen(
        [sys.executable, "-m", "tests.gcs_xml_api", GCS_BUCKET],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    xml_url = front.stdout.readline().strip()
    patch = pytest.MonkeyPatch()
    patch.setenv("STORAGE_EMULATOR_HOST", emulator_url)
    patch.setenv("CAPTIONING_GCS_XML_ENDPOINT", xml_url)
    patch.setenv("NO_GCE_CHECK", "true")
    patch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    from google.cloud import storage

    yield storage.Client.create_anonymous_client().bucket(GCS_BUCKET)
    patch.undo()
    for process in (front, emulator):
        process.kill()
        process.wait(10)
