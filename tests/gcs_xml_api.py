"""The GCS XML API in front of the GCS emulator, for delta-rs.

delta-rs reaches ``gs://`` through the Rust ``object_store`` crate, which speaks Cloud
Storage's XML API; gcp-storage-emulator (the ``gcs`` fixture) speaks only the JSON API
that google-cloud-storage and Beam use. This loopback server translates the handful of
XML calls object_store makes (GET/HEAD with ranges, PUT with
``x-goog-if-generation-match: 0`` for the log's put-if-absent, DELETE, and list-type=2
listing) into google-cloud-storage calls on the emulator's bucket, so that Beam's files
and delta-rs' commits live in one store. Put-if-absent is made atomic here with a lock:
every delta-rs request of a test goes through this one server.

It runs in a process of its own (``python -m tests.gcs_xml_api``), and so must the
emulator behind it: delta-rs' Python calls hold the GIL while they wait for a response, so
a server thread in the calling process would never answer.
"""

from __future__ import annotations

import contextlib
import email.utils
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from google.api_core import exceptions


def _rfc3339(blob) -> str:
    return blob.updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Handler(BaseHTTPRequestHandler):
    bucket = None  # set by serve()
    create_lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parsed = urllib.parse.urlsplit(self.path)
        bucket, _, key = parsed.path.lstrip("/").partition("/")
        return bucket, urllib.parse.unquote(key), urllib.parse.parse_qs(parsed.query)

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _blob_headers(self, blob) -> dict[str, str]:
        return {
            "ETag": f'"{blob.etag or blob.generation}"',
            "Last-Modified": email.utils.format_datetime(blob.updated, usegmt=True),
            "x-goog-generation": str(blob.generation),
        }

    def do_GET(self) -> None:
        _, key, query = self._target()
        if not key:
            return self._list(query)
        blob = self.bucket.get_blob(key)
        if blob is None:
            return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
        data = blob.download_as_bytes()
        headers = self._blob_headers(blob)
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            if first == "":  # a suffix: the last N bytes
                start, end = max(len(data) - int(last), 0), len(data) - 1
            else:
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._reply(206, data[start : end + 1], headers)
        return self._reply(200, data, headers)

    def do_HEAD(self) -> None:
        _, key, _ = self._target()
        blob = self.bucket.get_blob(key)
        if blob is None:
            return self._reply(404)
        headers = self._blob_headers(blob)
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(blob.size))
        self.end_headers()

    def do_PUT(self) -> None:
        _, key, _ = self._target()
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        source = self.headers.get("x-goog-copy-source")
        if source:
            _, _, source_key = urllib.parse.unquote(source).lstrip("/").partition("/")
            data = self.bucket.blob(source_key).download_as_bytes()
        if self.headers.get("x-goog-if-generation-match") == "0":
            with self.create_lock:
                if self.bucket.get_blob(key) is not None:
                    return self._reply(412, b"<Error><Code>PreconditionFailed</Code></Error>")
                self.bucket.blob(key).upload_from_string(data)
        else:
            self.bucket.blob(key).upload_from_string(data)
        return self._reply(200, b"", self._blob_headers(self.bucket.get_blob(key)))

    def do_DELETE(self) -> None:
        _, key, _ = self._target()
        with contextlib.suppress(exceptions.NotFound):
            self.bucket.blob(key).delete()
        self._reply(204)

    def _list(self, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [None])[0]
        after = query.get("start-after", [""])[0]
        contents, prefixes = [], set()
        for blob in self.bucket.client.list_blobs(self.bucket.name, prefix=prefix):
            if blob.name <= after:
                continue
            rest = blob.name[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            contents.append(
                f"<Contents><Key>{escape(blob.name)}</Key><Size>{blob.size}</Size>"
                f"<LastModified>{_rfc3339(blob)}</LastModified>"
                f'<ETag>"{blob.etag or blob.generation}"</ETag></Contents>'
            )
        common = "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>"
            for p in sorted(prefixes)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            f"<Name>{self.bucket.name}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents)}</KeyCount><IsTruncated>false</IsTruncated>"
            f"{''.join(contents)}{common}</ListBucketResult>"
        ).encode()
        self._reply(200, body, {"Content-Type": "application/xml"})


def main() -> None:
    """``python -m tests.gcs_xml_api BUCKET``, with STORAGE_EMULATOR_HOST naming the
    emulator: serves on a free loopback port and prints its URL."""
    import sys

    from google.cloud import storage

    bucket = storage.Client.create_anonymous_client().bucket(sys.argv[1])
    handler = type("Handler", (_Handler,), {"bucket": bucket})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
