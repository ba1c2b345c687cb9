"""Fetching image bytes over HTTP(S) for the caption job, as img2dataset does.

``HttpFetcher`` downloads URLs with aiohttp on a private asyncio event loop that runs in
one daemon thread per fetcher; callers stay synchronous (``fetch`` blocks,
``fetch_many`` yields results as they finish). aiohttp was measured against
``requests`` + threads, ``urllib3`` + threads and ``httpx`` (sync and async) on loopback
with 10-15 KB JPEGs, 64 in flight, on 2 cores: it was the fastest and used the least CPU
per image (``benchmarks/http_fetch.py`` measures this fetcher).

Every fetch is bounded so that no URL can hang a worker or fill its memory:

- ``connect_timeout_s`` bounds DNS + TCP + TLS for each connection; ``read_timeout_s``
  bounds each silence while waiting for the headers or the body, and
  ``connect_timeout_s + read_timeout_s`` is the deadline for one whole attempt
  (redirects included), so a server that trickles bytes forever still ends;
- the body stops at ``max_bytes``: refused at once when Content-Length says it is
  larger, and counted while streaming when there is no Content-Length (chunked) or the
  body is compressed (aiohttp decompresses in bounded steps);
- at most ``max_redirects`` redirects are followed, so a redirect loop is an error;
- 429 and 5xx (but 501 and 505, which are permanent) are retried ``retries`` times with
  exponential backoff and jitter, honouring a numeric Retry-After (capped at
  ``MAX_RETRY_AFTER_S``); so are connections refused, reset or dropped mid-body
  (``ConnectionFailed``), which cost little to retry. Other 4xx are not retried, nor
  are timeouts: a timed-out attempt has already held a slot for up to ``connect +
  read`` seconds, a server that slow is rarely quicker a second later, and retrying
  would multiply the worst case by ``retries + 1``. Neither are DNS failures (a dead
  domain stays dead for the job) nor TLS failures.

The Content-Type header is not trusted: a 2xx body is returned whatever it says and the
decoder decides. A response whose X-Robots-Tag opts out of AI use (``noai`` or
``noimageai``, bare or for our user-agent token) is refused when ``honour_robots_tag``.
Only ``http://`` and ``https://`` URLs are fetched, also as redirect targets.

A URL that gives no bytes raises (or, from ``fetch_many``, yields) ``FetchError``, whose
``error_type`` is one CamelCase word like the other ``captioning.sources`` errors:

====================  ==========================================================
``UnsupportedScheme``  not http(s), or redirected to such a URL
``InvalidUrl``         not a URL aiohttp can request (no host, bad port...)
``Http<status>``       a final status outside 2xx: ``Http404``, ``Http429``...
``TooManyRedirects``   more than ``max_redirects`` redirects (a loop, say)
``TooLarge``           a body over ``max_bytes``
``Timeout``            connect, read silence, or the attempt's deadline ran out
``ConnectionFailed``   refused, reset, or a body cut short or not decompressible
``DnsError``           the host name did not resolve
``TlsError``           the TLS handshake or the certificate failed
``OptedOut``           X-Robots-Tag ``noai`` / ``noimageai``
``BadResponse``        a malformed response (bad status line or headers)
``FetchFailed``        anything else (a bug here or in aiohttp), with its type
====================  ==========================================================

Threads: ``fetch``, ``fetch_many`` and ``close`` may be called from any number of
threads at once; ``settings.concurrency`` bounds the requests in flight for the whole
fetcher, whichever thread asked. Each ``fetch_many`` generator must be consumed by one
thread. The fetcher is not picklable (it owns a thread, a loop and sockets): a Beam
DoFn keeps the picklable ``HttpSettings`` and makes the fetcher in ``setup()``, and
closes it in ``teardown()``. It is made lazily on first use, so one made before a fork
works in the child if it was not used before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import random
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass

import aiohttp
from yarl import URL

# A Retry-After longer than this is waited only this long: a worker should not sleep
# for an hour on one URL; if the server still says 429 the URL fails as Http429.
MAX_RETRY_AFTER_S = 30.0

# The X-Robots-Tag directives that opt an image out of AI use (img2dataset's
# "noai"/"noimageai"; it also refuses "noindex"/"noimageindex", which are about search
# engines, not training or captioning).
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})

# Directives that carry a value after a colon: their name is not a user-agent token.
_VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_UA_TOKEN = re.compile(r"^[a-z0-9_.-]+$")

# 501 Not Implemented and 505 HTTP Version Not Supported will not change on a retry.
_PERMANENT_5XX = frozenset({501, 505})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MESSAGE_CHARS = 300
_CLOSED = object()  # put in a fetch_many's results when the fetcher closes under it


@dataclass(frozen=True)
class HttpSettings:
    """How a fetcher downloads; picklable, so a DoFn can carry it to its workers."""

    concurrency: int = 64  # requests in flight per fetcher
    connect_timeout_s: float = 10.0  # DNS + TCP + TLS, per connection
    # The longest silence while waiting for headers or body; connect + read is also the
    # deadline for one attempt, so a body trickling in forever still ends.
    read_timeout_s: float = 30.0
    max_bytes: int = 128 * 1024 * 1024
    max_redirects: int = 5  # redirects followed; one more is TooManyRedirects
    retries: int = 3  # extra tries for 429, 5xx and refused/reset connections
    backoff_s: float = 0.5  # first backoff; doubles per try, jittered by +-50%
    user_agent: str = "captioning/0.1 (batch image captioning)"
    honour_robots_tag: bool = True  # X-Robots-Tag noai / noimageai opt-out, as img2dataset
    # The user-agent token an X-Robots-Tag directive may name ("captioning: noai").
    robots_token: str = "captioning"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("connect_timeout_s and read_timeout_s must be positive")
        if self.max_bytes < 0 or self.max_redirects < 0 or self.retries < 0:
            raise ValueError("max_bytes, max_redirects and retries must not be negative")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must not be negative, not {self.backoff_s}")


class FetchError(Exception):
    """A URL that gave no image bytes. ``error_type`` names the cause (one CamelCase
    word: ``Http404``, ``Timeout``, ``TooLarge``..., see the module docstring); ``status``
    is the HTTP status of the last response, or None when there was none; ``str()`` is
    one line and includes that status where there was one."""

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        # One line, short: it becomes the message column of an error row.
        message = " ".join(message.split())
        if len(message) > _MESSAGE_CHARS:
            message = message[: _MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.error_type = error_type
        self.status = status

    def __reduce__(self) -> tuple:
        # Exceptions pickle their args by default, which would lose error_type and status.
        return (FetchError, (self.error_type, str(self), self.status))

    def __repr__(self) -> str:
        return f"FetchError({self.error_type!r}, {str(self)!r}, status={self.status!r})"


def robots_opt_out(values: Iterable[str], token: str = "captioning") -> str | None:
    """The opt-out directive (``"noai"`` or ``"noimageai"``) that X-Robots-Tag header
    ``values`` (one string per header line) apply to user-agent ``token``, or None.

    Directives are comma-separated; one prefixed by a user-agent token
    (``otherbot: noai``) applies to that agent only, as do the directives after it in
    the same header line (Google's reading; img2dataset reads one token per line). A
    bare directive applies to everyone. Tokens compare case-insensitively."""
    token = token.lower()
    for value in values:
        agent: str | None = None  # None: the directives apply to every agent
        for item in value.split(","):
            directive = item.strip().lower()
            name, colon, rest = directive.partition(":")
            name = name.strip()
            if colon and name not in _VALUED_DIRECTIVES and _UA_TOKEN.match(name):
                agent, directive = name, rest.strip()
            if directive in OPT_OUT_DIRECTIVES and agent in (None, token):
                return directive
    return None


class _Retryable(Exception):
    """An attempt that failed in a way worth retrying; carries the error to raise when
    no tries are left, and the server's Retry-After in seconds if it sent one."""

    def __init__(self, error: FetchError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """A numeric Retry-After in seconds, capped; None when absent or an HTTP date (then
    the exponential backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not 0 <= seconds < float("inf"):
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def _status_error(status: int, reason: str | None, url: URL) -> FetchError:
    return FetchError(f"Http{status}", f"HTTP {status} {reason or ''} from {url}", status)


class _Batch:
    """One ``fetch_many`` call's fetches, in the loop thread. Results finished in one turn
    of the loop reach the caller in one list: one wake-up of the caller's thread for
    them all, not one each (each wake-up also takes the GIL from the loop)."""

    def __init__(self) -> None:
        self.results: queue.SimpleQueue[list[tuple[str, bytes | FetchError]] | object] = (
            queue.SimpleQueue()
        )
        self.tasks: set[asyncio.Task[tuple[str, bytes | FetchError]]] = set()
        self._ready: list[tuple[str, bytes | FetchError]] = []

    def done(self, task: asyncio.Task[tuple[str, bytes | FetchError]]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        if not self._ready:
            # After the other callbacks already queued: those finished in this turn.
            asyncio.get_running_loop().call_soon(self._flush)
        self._ready.append(task.result())

    def _flush(self) -> None:
        self.results.put(self._ready)
        self._ready = []

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


class _Engine:
    """The event loop thread and its aiohttp session: everything a fetcher must close.
    Kept apart from HttpFetcher so that the fetcher's finalizer can hold it without
    keeping the fetcher alive."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._closed = False
        self._close_lock = threading.Lock()
        # The fetch_many calls under way, told when the fetcher closes under them.
        self.batches: weakref.WeakSet[_Batch] = weakref.WeakSet()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="captioning-http-fetch", daemon=True)
        self.thread.start()
        self.session, self.slots = asyncio.run_coroutine_threadsafe(
            self._open(), self.loop
        ).result()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        s = self.settings
        connector = aiohttp.TCPConnector(limit=s.concurrency, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(
            total=s.connect_timeout_s + s.read_timeout_s,
            connect=s.connect_timeout_s,
            sock_connect=s.connect_timeout_s,
            sock_read=s.read_timeout_s,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.8"},
            # No cookies carried from one site's image to another's, and no memory growth.
            cookie_jar=aiohttp.DummyCookieJar(),
            # No proxy settings or ~/.netrc credentials taken from the environment: the
            # URLs come from manifests and may point anywhere.
            trust_env=False,
        )
        # The semaphore, not the connector, bounds requests in flight: a request waiting
        # out a backoff gives its slot back, which a connector limit cannot express.
        return session, asyncio.Semaphore(s.concurrency)

    def _check_caller(self) -> None:
        if self._closed:
            raise RuntimeError("HttpFetcher is closed")
        if threading.get_ident() == self.thread.ident:
            raise RuntimeError("HttpFetcher cannot be called from its own event loop")

    def submit(self, url: str) -> Future[tuple[str, bytes | FetchError]]:
        self._check_caller()
        return asyncio.run_coroutine_threadsafe(self.fetch(url), self.loop)

    def start_many(self, urls: list[str], batch: _Batch) -> None:
        """Starts fetching ``urls`` into ``batch``: one wake-up of the loop for them all,
        where one ``run_coroutine_threadsafe`` each cost ~50 us of the caller's time."""
        self._check_caller()
        self.loop.call_soon_threadsafe(self._start, urls, batch)

    def _start(self, urls: list[str], batch: _Batch) -> None:
        if self._closed:
            batch.results.put(_CLOSED)
            return
        self.batches.add(batch)
        for url in urls:
            task = self.loop.create_task(self.fetch(url))
            batch.tasks.add(task)
            task.add_done_callback(batch.done)

    async def fetch(self, url: str) -> tuple[str, bytes | FetchError]:
        """(url, bytes or FetchError); never raises, so every URL gets one result."""
        try:
            return url, await self._fetch(url)
        except FetchError as error:
            return url, error
        except Exception as error:  # noqa: BLE001 - every URL must end as one result
            return url, FetchError("FetchFailed", f"{type(error).__name__}: {error}")

    async def _fetch(self, url: str) -> bytes:
        s = self.settings
        try:
            # Parsed once, by yarl as aiohttp would; aiohttp takes the URL object as it is.
            target = URL(url.strip())
        except ValueError as error:
            raise FetchError("InvalidUrl", f"not a URL: {url} ({error})") from None
        if target.scheme not in ("http", "https"):
            shown = f"{target.scheme}://" if target.scheme else "a URL with no scheme"
            raise FetchError("UnsupportedScheme", f"{shown} is not fetched over HTTP: {url}")
        if not target.host:
            raise FetchError("InvalidUrl", f"no host in {url}")
        for attempt in range(s.retries + 1):
            async with self.slots:
                try:
                    return await self._attempt(target)
                except _Retryable as retryable:
                    if attempt == s.retries:
                        raise retryable.error from None
                    delay = retryable.retry_after
            if delay is None:
                delay = s.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
            await asyncio.sleep(delay)  # outside the slot: others may use it meanwhile
        raise AssertionError("unreachable")

    async def _attempt(self, url: URL) -> bytes:
        s = self.settings
        status: int | None = None
        at = ""  # " (HTTP <status>)" once a response came, for the messages
        try:
            async with self.session.get(
                url,
                allow_redirects=s.max_redirects > 0,
                # aiohttp raises on the max_redirects-th redirect; ours counts those followed.
                max_redirects=s.max_redirects + 1,
            ) as response:
                status = response.status
                at = f" (HTTP {status})"
                if status in _REDIRECT_STATUSES and s.max_redirects == 0:
                    raise FetchError(
                        "TooManyRedirects", f"redirects not allowed: {url}{at}", status
                    )
                if status == 429 or (status >= 500 and status not in _PERMANENT_5XX):
                    raise _Retryable(
                        _status_error(status, response.reason, url),
                        _retry_after(response.headers.get("Retry-After")),
                    )
                if not 200 <= status < 300:
                    raise _status_error(status, response.reason, url)
                if s.honour_robots_tag:
                    tags = response.headers.getall("X-Robots-Tag", [])
                    directive = robots_opt_out(tags, s.robots_token)
                    if directive:
                        raise FetchError(
                            "OptedOut",
                            f"X-Robots-Tag {'; '.join(tags)!r} opts out ({directive}){at}",
                            status,
                        )
                length = response.content_length
                if length is not None and length > s.max_bytes:
                    raise FetchError(
                        "TooLarge",
                        f"Content-Length {length} is over the limit of {s.max_bytes} bytes{at}",
                        status,
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > s.max_bytes:
                        raise FetchError(
                            "TooLarge", f"body over the limit of {s.max_bytes} bytes{at}", status
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        # Timeouts first: aiohttp's timeout errors are also connection errors.
        except aiohttp.ConnectionTimeoutError as error:
            raise FetchError(
                "Timeout", f"connect timed out after {s.connect_timeout_s:g} s", status
            ) from error
        except aiohttp.SocketTimeoutError as error:
            raise FetchError(
                "Timeout", f"no data for {s.read_timeout_s:g} s{at}", status
            ) from error
        except asyncio.TimeoutError as error:
            raise FetchError(
                "Timeout",
                f"not complete within {s.connect_timeout_s + s.read_timeout_s:g} s{at}",
                status,
            ) from error
        except aiohttp.TooManyRedirects as error:
            status = error.history[-1].status if error.history else status
            raise FetchError(
                "TooManyRedirects",
                f"more than {s.max_redirects} redirects from {url} (last HTTP {status})",
                status,
            ) from error
        except aiohttp.NonHttpUrlRedirectClientError as error:
            raise FetchError(
                "UnsupportedScheme", f"redirected to a URL not fetched over HTTP: {error}"
            ) from error
        except aiohttp.InvalidURL as error:
            raise FetchError("InvalidUrl", f"not a URL that can be fetched: {error}") from error
        except aiohttp.ClientConnectorDNSError as error:
            raise FetchError("DnsError", f"host name not resolved: {error}") from error
        except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as error:
            raise FetchError("TlsError", str(error)) from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            # ClientPayloadError: the body ended before its length (a dropped connection)
            # or its compression is broken; both read the same here, and a retry is cheap.
            raise _Retryable(
                FetchError("ConnectionFailed", f"{type(error).__name__}: {error}{at}", status)
            ) from error
        except aiohttp.ClientResponseError as error:
            raise FetchError(
                "BadResponse", f"malformed response: {error.message}{at}", status
            ) from error

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if threading.get_ident() == self.thread.ident:
            # Dropped inside the loop's own thread (a finalizer): waiting would deadlock.
            self.loop.stop()
            return
        if not self.loop.is_closed() and self.thread.is_alive():
            # RuntimeError: the loop stopped under us (at exit); a timeout: stuck, go on.
            with contextlib.suppress(RuntimeError, FutureTimeoutError):
                asyncio.run_coroutine_threadsafe(self._aclose(), self.loop).result(timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.loop.close()

    async def _aclose(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for batch in self.batches:
            batch.results.put(_CLOSED)
        await self.session.close()
        await self.loop.shutdown_default_executor()  # the DNS resolver's threads


class HttpFetcher:
    """Fetches image bytes over HTTP(S) with the limits of ``HttpSettings``; see the
    module docstring for the errors, the retries and what is thread-safe. Use as a
    context manager or call ``close()``."""

    def __init__(self, settings: HttpSettings = HttpSettings()) -> None:
        self.settings = settings
        self._engine: _Engine | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    def _started(self) -> _Engine:
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._closed:
                raise RuntimeError("HttpFetcher is closed")
            if self._engine is None:
                self._engine = _Engine(self.settings)
                # Stops the thread and closes the sockets if the fetcher is dropped unclosed.
                self._finalizer = weakref.finalize(self, self._engine.close)
            return self._engine

    def fetch(self, url: str) -> bytes:
        """The body of ``url``; raises FetchError when it gives none."""
        try:
            _, result = self._started().submit(url).result()
        except CancelledError:
            raise RuntimeError("HttpFetcher was closed while fetching") from None
        if isinstance(result, FetchError):
            raise result
        return result

    def fetch_many(self, urls: Iterable[str]) -> Iterator[tuple[str, bytes | FetchError]]:
        """(url, bytes or FetchError) for every URL in ``urls``, exactly once each (a URL
        listed twice is fetched twice), in the order they finish. ``urls`` is read
        lazily, a window ahead of the results, so it may be a long generator; closing
        this generator early cancels what it had started."""
        engine = self._started()
        # Twice the slots: the fetches waiting out a backoff hold none, and the rest
        # should still find work ready. Refilled half a window at a time, so the loop is
        # woken once per many URLs.
        window = 2 * self.settings.concurrency
        refill = max(1, window // 2)
        batch = _Batch()
        remaining = iter(urls)
        exhausted = False
        pending = 0
        try:
            while True:
                if not exhausted and window - pending >= refill:
                    starting = list(itertools.islice(remaining, window - pending))
                    exhausted = len(starting) < window - pending
                    if starting:
                        engine.start_many(starting, batch)
                        pending += len(starting)
                if not pending:
                    return
                finished = batch.results.get()
                if finished is _CLOSED:
                    raise RuntimeError("HttpFetcher was closed while fetch_many was under way")
                pending -= len(finished)
                yield from finished
        finally:
            if pending:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
                    engine.loop.call_soon_threadsafe(batch.cancel)

    def close(self) -> None:
        """Cancels what is in flight, closes the connections and stops the loop thread.
        Idempotent; fetching afterwards raises RuntimeError."""
        with self._lock:
            self._closed = True
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        if self._finalizer is not None:
            self._finalizer.detach()

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        raise TypeError(
            "HttpFetcher is not picklable (it owns a thread and sockets): keep its "
            "HttpSettings in the DoFn and make the fetcher in DoFn.setup()"
        )
