"""HttpFetcher against a real HTTP server on loopback: every way a URL can end, the
retries, the limits, the opt-out header, and the bound on requests in flight."""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import pickle
import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from captioning.sources.http_fetch import (
    FetchError,
    HttpFetcher,
    HttpSettings,
    robots_opt_out,
)

LIMIT = 256 * 1024  # the tests' max_bytes
HTML = b"<!doctype html><html><body>Not an image</body></html>"
# Small timeouts keep the file to a few seconds; 0.5 s is still far above loopback latency.
SETTINGS = HttpSettings(
    concurrency=8,
    connect_timeout_s=1.0,
    read_timeout_s=0.5,
    max_bytes=LIMIT,
    max_redirects=5,
    retries=2,
    backoff_s=0.02,
)


def _jpeg() -> bytes:
    rng = random.Random(3)
    image = Image.new("RGB", (64, 48))
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64 * 48)])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


JPEG = _jpeg()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 64 connections at once must not overflow the backlog

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()  # requests per path, for the retry counts
        self.in_flight = 0  # requests with ?delay= being served, and the most at once
        self.max_in_flight = 0
        self.stopping = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that closed a kept-alive connection while it was read: expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts
    # Headers and body go out in two writes; with Nagle the second waits ~40 ms for
    # the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with server.lock:
            server.hits[parts.path] += 1
            hits = server.hits[parts.path]
        if "delay" in query:
            # Counted only while held here, before any byte of the answer is sent: the
            # client cannot have finished (and started another) before the count drops.
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            time.sleep(float(query["delay"][0]))
            with server.lock:
                server.in_flight -= 1
        # The client hangs up on purpose after a timeout or over the size limit.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._route(parts.path, query, hits)

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Type": "image/jpeg"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, chunks: itertools.count | list, pause: float, piece: bytes) -> None:
        """A chunked body, ``piece`` at a time, until the client hangs up or 5 s pass."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + 5
        for _ in chunks:
            if time.monotonic() > deadline or self.server.stopping.is_set():
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            if pause:
                time.sleep(pause)
        self.wfile.write(b"0\r\n\r\n")

    def _route(self, path: str, query: dict[str, list[str]], hits: int) -> None:
        head, _, rest = path.strip("/").partition("/")
        if head == "good.jpg":
            self._answer(200, JPEG)
        elif head == "missing":
            self._answer(404, b"not found", {"Content-Type": "text/plain"})
        elif head == "flaky":  # 500, then the image
            self._answer(500, b"oops") if hits == 1 else self._answer(200, JPEG)
        elif head == "always500":
            self._answer(500, b"oops", {"Content-Type": "text/plain"})
        elif head == "busy":  # 429 asking for 1 s, then the image
            if hits == 1:
                self._answer(429, b"slow down", {"Retry-After": "1"})
            else:
                self._answer(200, JPEG)
        elif head == "always429":
            self._answer(429, b"slow down", {"Retry-After": "0"})
        elif head == "slow":  # no answer for 2 s
            self.server.stopping.wait(2.0)
            self._answer(200, JPEG)
        elif head == "trickle":  # a byte every 50 ms, forever: within every size limit
            self._chunked(itertools.count(), 0.05, b"x")
        elif head == "endless":  # 64 KiB chunks, forever, with no Content-Length
            self._chunked(itertools.count(), 0, b"\xff" * 65536)
        elif head == "big-length":  # says (and sends) one byte over the limit
            self._answer(200, b"\xff" * (LIMIT + 1))
        elif head == "gzip":  # the image, gzip-encoded on the wire
            self._answer(200, gzip.compress(JPEG), {"Content-Encoding": "gzip"})
        elif head == "gzip-bomb":  # 10 KB on the wire, 10 MB decompressed
            body = gzip.compress(bytes(10 * 1024 * 1024))
            self._answer(200, body, {"Content-Encoding": "gzip"})
        elif head == "loop":
            self._answer(302, b"", {"Location": "/loop"})
        elif head == "hops":  # /hops/N redirects N times, then the image
            if int(rest) > 0:
                self._answer(302, b"", {"Location": f"/hops/{int(rest) - 1}"})
            else:
                self._answer(200, JPEG)
        elif head == "to-ftp":
            self._answer(302, b"", {"Location": "ftp://127.0.0.1/x.jpg"})
        elif head == "html":  # HTML, served as a JPEG
            self._answer(200, HTML, {"Content-Type": "image/jpeg"})
        elif head == "robots":  # the image with X-Robots-Tag lines from ?tag=
            self.send_response(200)
            for tag in query.get("tag", []):
                self.send_header("X-Robots-Tag", tag)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)
        else:
            self._answer(400, b"unknown test route", {"Content-Type": "text/plain"})


@pytest.fixture(scope="module")
def server():
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.stopping.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def fetcher():
    with HttpFetcher(SETTINGS) as fetcher:
        yield fetcher


def _unique(server: _Server, route: str) -> tuple[str, str]:
    """A URL on ``route`` with a fresh last path segment, and that path, so that the
    server's count of requests for it is this test's alone."""
    path = f"/{route}/{uuid.uuid4().hex}"
    return server.url + path, path


def _error(fetcher: HttpFetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)
    return caught.value


# --- the cases, one at a time --------------------------------------------------------


def test_good_jpeg_is_fetched(server, fetcher):
    assert fetcher.fetch(server.url + "/good.jpg") == JPEG


def test_html_served_as_jpeg_is_returned_as_it_is(server, fetcher):
    # Content-Type is not trusted either way: the decoder decides from the bytes.
    assert fetcher.fetch(server.url + "/html") == HTML


def test_404_is_an_error_with_its_status_and_is_not_retried(server, fetcher):
    url, path = _unique(server, "missing")
    error = _error(fetcher, url)
    assert (error.error_type, error.status) == ("Http404", 404)
    assert "404" in str(error) and "\n" not in str(error)
    assert server.hits[path] == 1


def test_500_is_retried_until_it_succeeds(server, fetcher):
    url, path = _unique(server, "flaky")
    assert fetcher.fetch(url) == JPEG
    assert server.hits[path] == 2


def test_500_every_time_fails_after_the_retries(server, fetcher):
    url, path = _unique(server, "always500")
    error = _error(fetcher, url)
    assert (error.error_type, error.status) == ("Http500", 500)
    assert "500" in str(error)
    assert server.hits[path] == 1 + SETTINGS.retries


def test_429_waits_for_retry_after_then_succeeds(server, fetcher):
    url, path = _unique(server, "busy")
    started = time.monotonic()
    assert fetcher.fetch(url) == JPEG
    assert time.monotonic() - started >= 0.95  # Retry-After: 1, not the 20 ms backoff
    assert server.hits[path] == 2


def test_429_every_time_fails_as_http429(server, fetcher):
    url, path = _unique(server, "always429")
    error = _error(fetcher, url)
    assert (error.error_type, error.status) == ("Http429", 429)
    assert "429" in str(error)
    assert server.hits[path] == 1 + SETTINGS.retries


def test_slower_than_the_read_timeout_is_a_timeout_and_not_retried(server, fetcher):
    url, path = _unique(server, "slow")
    started = time.monotonic()
    error = _error(fetcher, url)
    assert error.error_type == "Timeout"
    assert error.status is None  # no response came
    assert time.monotonic() - started < 1.5
    assert server.hits[path] == 1


def test_a_body_trickling_forever_ends_at_the_deadline(server):
    # Each byte comes well within the read timeout; the attempt's deadline ends it.
    settings = HttpSettings(connect_timeout_s=0.2, read_timeout_s=0.3, max_bytes=LIMIT)
    started = time.monotonic()
    with HttpFetcher(settings) as fetcher:
        error = _error(fetcher, server.url + "/trickle")
    assert error.error_type == "Timeout"
    assert error.status == 200 and "200" in str(error)
    assert time.monotonic() - started < 2.0


def test_content_length_over_the_limit_is_refused_before_the_body(server, fetcher):
    error = _error(fetcher, server.url + "/big-length")
    assert (error.error_type, error.status) == ("TooLarge", 200)
    assert "Content-Length" in str(error) and "200" in str(error)


def test_an_endless_chunked_body_stops_at_the_limit(server, fetcher):
    error = _error(fetcher, server.url + "/endless")
    assert (error.error_type, error.status) == ("TooLarge", 200)
    assert str(LIMIT) in str(error)


def test_a_gzip_encoded_image_is_returned_decoded(server, fetcher):
    assert fetcher.fetch(server.url + "/gzip") == JPEG


def test_a_gzip_bomb_stops_at_the_limit(server, fetcher):
    error = _error(fetcher, server.url + "/gzip-bomb")
    assert error.error_type == "TooLarge"


def test_a_redirect_loop_is_an_error(server, fetcher):
    error = _error(fetcher, server.url + "/loop")
    assert error.error_type == "TooManyRedirects"
    assert error.status == 302 and "302" in str(error)


def test_max_redirects_are_followed_and_one_more_is_refused(server, fetcher):
    assert fetcher.fetch(server.url + f"/hops/{SETTINGS.max_redirects}") == JPEG
    error = _error(fetcher, server.url + f"/hops/{SETTINGS.max_redirects + 1}")
    assert error.error_type == "TooManyRedirects"


def test_no_redirects_allowed(server):
    with HttpFetcher(HttpSettings(max_redirects=0)) as fetcher:
        assert fetcher.fetch(server.url + "/hops/0") == JPEG
        error = _error(fetcher, server.url + "/hops/1")
    assert (error.error_type, error.status) == ("TooManyRedirects", 302)


def test_a_redirect_to_another_scheme_is_refused(server, fetcher):
    assert _error(fetcher, server.url + "/to-ftp").error_type == "UnsupportedScheme"


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x.jpg", "file:///etc/passwd", "gs://bucket/x.jpg", "images/x.jpg", ""],
)
def test_only_http_and_https_urls_are_fetched(fetcher, url):
    error = _error(fetcher, url)
    assert error.error_type == "UnsupportedScheme"
    assert error.status is None


def test_a_url_with_no_host_is_invalid(fetcher):
    assert _error(fetcher, "http:///x.jpg").error_type == "InvalidUrl"


def test_connection_refused_is_a_connection_failure():
    with socket.socket() as sock:  # a port that was free a moment ago, and closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with HttpFetcher(SETTINGS) as fetcher:
        error = _error(fetcher, f"http://127.0.0.1:{port}/x.jpg")
    assert error.error_type == "ConnectionFailed"
    assert error.status is None


def test_an_untrusted_certificate_is_a_tls_error(tmp_path):
    """Certificates are verified: a self-signed one gives no bytes."""
    import datetime
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    httpd = _Server()
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with HttpFetcher(SETTINGS) as fetcher:
            error = _error(fetcher, f"https://127.0.0.1:{httpd.server_address[1]}/good.jpg")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert error.error_type == "TlsError"
    assert "certificate" in str(error)


# --- X-Robots-Tag ---------------------------------------------------------------------


def _robots_url(server: _Server, *tags: str) -> str:
    from urllib.parse import urlencode

    return server.url + "/robots?" + urlencode([("tag", tag) for tag in tags])


def test_noai_is_refused_by_default(server, fetcher):
    error = _error(fetcher, _robots_url(server, "noai"))
    assert (error.error_type, error.status) == ("OptedOut", 200)
    assert "X-Robots-Tag" in str(error) and "noai" in str(error)


def test_noai_is_fetched_when_not_honoured(server):
    with HttpFetcher(HttpSettings(honour_robots_tag=False)) as fetcher:
        assert fetcher.fetch(_robots_url(server, "noai")) == JPEG


@pytest.mark.parametrize(
    "tags, refused",
    [
        (["otherbot: noai"], False),  # for another agent only
        (["noindex, nofollow"], False),  # about search, not AI use
        (["captioning: noimageai"], True),  # for us by name
        (["noindex", "NoAI"], True),  # a second header line; any case
        (["otherbot: noindex", "noimageai"], True),
    ],
)
def test_x_robots_tag_over_http(server, fetcher, tags, refused):
    url = _robots_url(server, *tags)
    if refused:
        assert _error(fetcher, url).error_type == "OptedOut"
    else:
        assert fetcher.fetch(url) == JPEG


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None),
        (["noai"], "noai"),
        (["noimageai"], "noimageai"),
        (["NoIndex, NoAI"], "noai"),
        (["otherbot: noai"], None),
        (["otherbot: noindex, noai"], None),  # both directives are for otherbot
        (["noai, otherbot: noindex"], "noai"),  # the bare one comes first
        (["Captioning: noai"], "noai"),
        (["captioning: noindex", "otherbot: noai"], None),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST, noai"], "noai"),
        (["noimageindex"], None),
        (["none"], None),
    ],
)
def test_robots_opt_out_parsing(values, expected):
    assert robots_opt_out(values, "captioning") == expected


# --- many URLs, threads, lifecycle ----------------------------------------------------


def test_fetch_many_returns_every_url_once_with_at_most_concurrency_in_flight(server, fetcher):
    kinds = ["good.jpg", "html", "missing", "robots?tag=noai&", "hops/2"]
    expected = {
        "good.jpg": JPEG,
        "html": HTML,
        "missing": "Http404",
        "robots?tag=noai&": "OptedOut",
        "hops/2": JPEG,
    }
    urls = {}
    for index in range(200):
        kind = kinds[index % len(kinds)]
        separator = "" if kind.endswith("&") else "?"
        # The 10 ms delay makes the requests overlap, so the bound is really tested.
        urls[f"{server.url}/{kind}{separator}delay=0.01&i={index}"] = kind
    with server.lock:
        server.max_in_flight = 0
    results = list(fetcher.fetch_many(url for url in urls))  # a generator, read lazily

    assert sorted(url for url, _ in results) == sorted(urls)
    for url, result in results:
        want = expected[urls[url]]
        if isinstance(want, bytes):
            assert result == want, url
        else:
            assert isinstance(result, FetchError) and result.error_type == want, url
    assert 2 <= server.max_in_flight <= SETTINGS.concurrency


def test_fetch_many_yields_a_url_listed_twice_twice(server, fetcher):
    url = server.url + "/good.jpg"
    results = list(fetcher.fetch_many([url, url, "ftp://x/y"]))
    assert Counter(u for u, _ in results) == {url: 2, "ftp://x/y": 1}


def test_fetch_many_stopped_early_leaves_the_fetcher_usable(server, fetcher):
    results = fetcher.fetch_many(server.url + f"/good.jpg?delay=0.01&i={i}" for i in range(100))
    assert next(results)[1] == JPEG
    results.close()
    assert fetcher.fetch(server.url + "/good.jpg") == JPEG


def test_fetch_from_many_threads_at_once(server, fetcher):
    failures: list[str] = []

    def work(worker: int) -> None:
        for index in range(15):
            url = server.url + f"/good.jpg?w={worker}&i={index}"
            if fetcher.fetch(url) != JPEG:
                failures.append(url)
        for url, result in fetcher.fetch_many(server.url + f"/html?w={worker}" for _ in range(5)):
            if result != HTML:
                failures.append(url)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures


def test_close_while_fetch_many_waits_ends_it(server):
    fetcher = HttpFetcher(SETTINGS)
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            list(fetcher.fetch_many([server.url + "/slow"] * 3))
        except RuntimeError as error:
            outcome.append(error)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.1)
    fetcher.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and "closed" in str(outcome[0])


def test_closed_fetcher_refuses_and_close_is_idempotent(server):
    fetcher = HttpFetcher(SETTINGS)
    assert fetcher.fetch(server.url + "/good.jpg") == JPEG
    fetcher.close()
    fetcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        fetcher.fetch(server.url + "/good.jpg")


def test_an_unused_fetcher_starts_no_thread():
    before = threading.active_count()
    HttpFetcher(SETTINGS).close()
    assert threading.active_count() == before


def test_fetcher_is_not_picklable_but_settings_and_errors_are():
    with pytest.raises(TypeError, match="setup"):
        pickle.dumps(HttpFetcher(SETTINGS))
    assert pickle.loads(pickle.dumps(SETTINGS)) == SETTINGS
    error = pickle.loads(pickle.dumps(FetchError("Http404", "HTTP 404 Not Found", 404)))
    assert (error.error_type, str(error), error.status) == ("Http404", "HTTP 404 Not Found", 404)


@pytest.mark.parametrize(
    "changes",
    [{"concurrency": 0}, {"read_timeout_s": 0}, {"max_bytes": -1}, {"retries": -1}],
)
def test_settings_are_checked(changes):
    with pytest.raises(ValueError):
        HttpSettings(**changes)
