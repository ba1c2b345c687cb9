"""The probe: every input that used to crash, hang or vanish is one row, and the job goes
on. One real caption job reads, at once, URLs from a loopback HTTP server (a good JPEG,
a 404, a 500 that succeeds on retry, a response slower than the timeout, an endless
body, a redirect loop, HTML served as image/jpeg, an X-Robots-Tag opt-out) and local
inputs that fight back (a FIFO, /dev/zero, a folder a glob matches, file://, s3://, one
file named three ways, a JPEG whose EXIF makes Pillow warn, bad manifest lines)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from captioning import run_layout
from captioning.cli.main import main
from tests.pipelines.conftest import read_table

READ_TIMEOUT_S = 1.5


def _jpeg(colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def _jpeg_with_corrupt_exif() -> bytes:
    """A good JPEG whose EXIF block is cut short: Pillow warns "Corrupt EXIF data"."""
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 10
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    data = _jpeg((40, 200, 40))
    return data[:2] + segment + data[2:]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    tries: ClassVar[Counter] = Counter()

    def log_message(self, *args) -> None:  # keep the test's output quiet
        pass

    def _send(self, status: int, body: bytes, content_type="image/jpeg", **headers) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        _Handler.tries[self.path] += 1
        if self.path == "/good.jpg":
            self._send(200, _jpeg())
        elif self.path == "/missing.jpg":
            self._send(404, b"not here", "text/plain")
        elif self.path == "/flaky.jpg":  # fails once, then works
            if _Handler.tries[self.path] == 1:
                self._send(500, b"oops", "text/plain")
            else:
                self._send(200, _jpeg((40, 40, 200)))
        elif self.path == "/slow.jpg":
            time.sleep(READ_TIMEOUT_S * 3)
            self._send(200, _jpeg())
        elif self.path == "/endless.jpg":  # no length, never ends
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"\xff" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                return
        elif self.path == "/loop.jpg":
            self.send_response(302)
            self.send_header("Location", "/loop.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/page.jpg":
            self._send(200, b"<!DOCTYPE html><html><body>Sign in</body></html>")
        elif self.path == "/noai.jpg":
            self._send(200, _jpeg(), X_Robots_Tag="noai")
        else:
            self._send(404, b"", "text/plain")


@pytest.fixture(scope="module")
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


# What each input must end as: "caption", or (stage, error_type, words in the message).
WEB = {
    "good.jpg": "caption",
    "flaky.jpg": "caption",
    "missing.jpg": ("read", "Http404", "404"),
    "slow.jpg": ("read", "Timeout", "1.5 s"),
    "endless.jpg": ("read", "TooLarge", "limit"),
    "loop.jpg": ("read", "TooManyRedirects", "redirect"),
    "page.jpg": ("decode", "UnidentifiedImage", "HTML"),
    "noai.jpg": ("read", "OptedOut", "noai"),
}


@pytest.fixture(scope="module")
def probe(web, tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    photos = root / "photos"
    photos.mkdir()
    (photos / "good.jpg").write_bytes(_jpeg())
    (photos / "warns.jpg").write_bytes(_jpeg_with_corrupt_exif())
    os.mkfifo(photos / "pipe.jpg")
    (photos / "album.jpg").mkdir()  # a folder named like an image
    manifest = root / "manifest.csv"
    lines = [f"{index},{web}/{name}" for index, name in enumerate(WEB)]
    lines += [
        "20,photos/good.jpg",  # relative...
        f"21,file://{photos / 'good.jpg'}",  # ...file://...
        "22,s3://bucket/photo.jpg",
        "23,/dev/zero",
        "",  # a blank line names nothing
        "24",  # a short line
    ]
    manifest.write_text("id,image_uri\n" + "\n".join(lines) + "\n")
    output = root / "out"
    argv = [
        "caption",
        "--input",
        str(photos / "*.jpg"),  # ...and absolute: one file, one row
        "--input-manifest",
        str(manifest),
        "--output",
        str(output),
        "--model",
        tiny_bundle,
        "--read-timeout",
        str(READ_TIMEOUT_S),
        "--max-image-bytes",
        str(2 * 1024 * 1024),
        "--max-error-rate",
        "1",
    ]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        # The CLI in a process of its own: a hang would be the test's timeout, and its
        # terminal output is what a user sees.
        result = subprocess.run(
            [sys.executable, "-m", "captioning.cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        )
    finally:
        os.chdir(cwd)
    captions, _ = read_table(run_layout.captions_table(str(output)))
    errors, _ = read_table(run_layout.errors_table(str(output)))
    return root, manifest, result, captions.to_pylist(), errors.to_pylist()


def test_every_hostile_input_is_one_row_and_the_job_exits_zero(probe, web):
    root, manifest, result, captions, errors = probe
    assert result.returncode == 0, result.stderr[-3000:]
    photos = root / "photos"
    rows = Counter(row["image_uri"] for row in captions + errors)
    assert max(rows.values()) == 1, rows  # no input has two rows
    captioned = {row["image_uri"] for row in captions}
    failed = {row["image_uri"]: row for row in errors}

    for name, expected in WEB.items():
        uri = f"{web}/{name}"
        if expected == "caption":
            assert uri in captioned, (uri, failed.get(uri))
            continue
        stage, error_type, words = expected
        row = failed[uri]
        assert (row["stage"], row["error_type"]) == (stage, error_type), row
        assert words.lower() in row["message"].lower(), row
        assert "\n" not in row["message"]

    # One file named relative, absolute and file:// is one row.
    assert str(photos / "good.jpg") in captioned
    assert str(photos / "warns.jpg") in captioned
    local = {
        str(photos / "pipe.jpg"): ("NotAFile", "FIFO"),
        str(photos / "album.jpg"): ("IsAFolder", "folder"),
        "/dev/zero": ("NotAFile", "device"),
        "s3://bucket/photo.jpg": ("UnsupportedScheme", "s3:// is not supported"),
    }
    for uri, (error_type, words) in local.items():
        row = failed[uri]
        assert (row["stage"], row["error_type"]) == ("read", error_type), row
        assert words in row["message"], row
    [bad_line] = [row for row in errors if row["image_uri"] == str(manifest)]
    assert bad_line["error_type"] == "BadManifestLine" and "'24'" in bad_line["message"]

    expected_rows = len(WEB) + len(local) + 3  # good.jpg, warns.jpg, the short line
    assert len(captions) + len(errors) == expected_rows


def test_the_terminal_shows_no_tracebacks_and_no_decoder_warnings(probe):
    _, _, result, _, _ = probe
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "Corrupt EXIF" not in output and "UserWarning" not in output


def test_flaky_urls_are_retried_and_good_ones_fetched_once(probe):
    assert _Handler.tries["/flaky.jpg"] == 2
    assert _Handler.tries["/good.jpg"] == 1
    assert _Handler.tries["/missing.jpg"] == 1  # a 404 is not retried


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "s3://bucket/*.jpg"], "s3:// is not supported"),
        (["--input", "ftp://host/a.jpg"], "ftp:// is not supported"),
        (["--output", "/sys/captioning-out"], "is not writable"),
        (["--read-timeout", "0"], "--read-timeout must be more than 0"),
    ],
)
def test_user_mistakes_about_inputs_are_one_line_and_exit_2(
    argv, message, tiny_bundle, tmp_path, capsys
):
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    base = {
        "--input": str(tmp_path / "*.jpg"),
        "--output": str(tmp_path / "out"),
        "--model": tiny_bundle,
    }
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    code = main(["caption", *[part for pair in base.items() for part in pair]])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
