"""How fast does the caption job's HTTP fetcher download small images?

    python benchmarks/http_fetch.py [--images 2000] [--concurrency 64] [--repeats 3] \\
        [--server aiohttp|threading] [--compare]

Serves ``--images`` distinct small JPEGs (~15 KB, made with Pillow) from a loopback
HTTP server in a separate process (so that it does not share this process's GIL), then
fetches them all with ``captioning.sources.http_fetch.HttpFetcher`` at
``--concurrency`` in flight, ``--repeats`` times, checking every body. Prints one JSON
object: the median run's ``images_per_s``, ``bytes_per_s`` and ``wall_s``, every run,
the fetcher's CPU time per image (both of its threads), the client, and whether it
meets ``target_images_per_s`` (500 images/s on 2 cores, the server on the same cores).

``--server`` picks the server: ``aiohttp`` (``aiohttp.web``, the default: the faster,
so that the server is not what is measured) or ``threading`` (``http.server``'s
``ThreadingHTTPServer`` with HTTP/1.1 keep-alive and TCP_NODELAY: ~4,000 images/s here,
and ~1,300 with Nagle on, its default, as headers and body are two writes).

``--compare`` also times the clients the fetcher was chosen over, reading the bodies
the same way: ``requests`` and ``urllib3`` on a 64-thread pool, ``httpx`` (threads, and
async) and bare aiohttp; the fetcher should stay close to bare aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_IMAGES_PER_S = 500


def make_jpegs(folder: Path, count: int, side: int = 140) -> list[bytes]:
    """``count`` distinct noisy JPEGs of ``side`` px square (~15 KB at 140 px), written
    to ``folder`` as 0.jpg, 1.jpg... for the server, and returned for the checks."""
    from PIL import Image

    rng = random.Random(0)
    payloads = []
    for index in range(count):
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        payloads.append(out.getvalue())
        (folder / f"{index}.jpg").write_bytes(payloads[-1])
    return payloads


def serve(folder: Path, kind: str) -> None:
    """The server process: every folder/N.jpg at /img/N.jpg; prints its port, then serves
    until killed."""
    bodies = {f"/img/{path.name}": path.read_bytes() for path in folder.glob("*.jpg")}
    # A backlog of 5 (http.server's default) drops some of 64 simultaneous connects,
    # which then wait a second for the SYN retry: the server would be what is measured.
    backlog = 1024
    if kind == "aiohttp":
        from aiohttp import web

        async def image(request: web.Request) -> web.Response:
            body = bodies.get(request.path)
            if body is None:
                return web.Response(status=404)
            return web.Response(body=body, content_type="image/jpeg")

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/{tail:.*}", image)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=backlog)
            await site.start()
            print(runner.addresses[0][1], flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
    else:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: one connection per client slot
            # Headers and body are two writes: with Nagle the body waits for an ACK.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                body = bodies.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = backlog
            daemon_threads = True

        server = Server(("127.0.0.1", 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()


def fetcher_run(urls: list[str], payloads: list[bytes], concurrency: int) -> dict:
    """One timed pass of HttpFetcher over ``urls`` (after a warm-up fetch, which opens
    the loop and a connection), every body checked."""
    from captioning.sources.http_fetch import FetchError, HttpFetcher, HttpSettings

    expected = dict(zip(urls, payloads, strict=True))
    with HttpFetcher(HttpSettings(concurrency=concurrency)) as fetcher:
        fetcher.fetch(urls[0])
        cpu = time.process_time()
        started = time.perf_counter()
        results = list(fetcher.fetch_many(urls))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    errors = [f"{url}: {result}" for url, result in results if isinstance(result, FetchError)]
    wrong = sum(
        not isinstance(result, FetchError) and result != expected[url] for url, result in results
    )
    if errors or wrong or len(results) != len(urls):
        raise SystemExit(f"{len(errors)} errors ({errors[:3]}), {wrong} wrong bodies")
    size = sum(map(len, payloads))
    return {
        "wall_s": round(wall, 3),
        "images_per_s": round(len(urls) / wall, 1),
        "bytes_per_s": round(size / wall),
        "client_cpu_ms_per_image": round(cpu / len(urls) * 1e3, 3),
    }


def _threaded(get: Callable[[str], bytes], urls: list[str], concurrency: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        get(urls[0])
        started = time.perf_counter()
        sizes = list(pool.map(get, urls))
        wall = time.perf_counter() - started
    assert all(sizes)
    return len(urls) / wall


def alternative_rates(urls: list[str], concurrency: int) -> dict[str, float]:
    """images/s of the other clients, each streaming the body in chunks as the fetcher
    does; a client that is not installed is left out."""
    rates: dict[str, float] = {}
    try:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=concurrency))

        def requests_get(url: str) -> bytes:
            with session.get(url, stream=True, timeout=(10, 30)) as response:
                return b"".join(response.iter_content(65536))

        rates["requests_threads"] = _threaded(requests_get, urls, concurrency)
    except ImportError:
        pass
    try:
        import urllib3

        pool = urllib3.PoolManager(maxsize=concurrency, block=True, retries=False)

        def urllib3_get(url: str) -> bytes:
            response = pool.request("GET", url, preload_content=False, timeout=30.0)
            body = b"".join(response.stream(65536))
            response.release_conn()
            return body

        rates["urllib3_threads"] = _threaded(urllib3_get, urls, concurrency)
    except ImportError:
        pass
    try:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.Client(limits=limits, timeout=30)

        def httpx_get(url: str) -> bytes:
            with client.stream("GET", url) as response:
                return b"".join(response.iter_bytes())

        rates["httpx_threads"] = _threaded(httpx_get, urls, concurrency)

        async def httpx_async() -> float:
            async with httpx.AsyncClient(limits=limits, timeout=30) as client:
                slots = asyncio.Semaphore(concurrency)

                async def get(url: str) -> bytes:
                    async with slots, client.stream("GET", url) as response:
                        return b"".join([chunk async for chunk in response.aiter_bytes()])

                await get(urls[0])
                started = time.perf_counter()
                await asyncio.gather(*(get(url) for url in urls))
                return len(urls) / (time.perf_counter() - started)

        rates["httpx_async"] = asyncio.run(httpx_async())
    except ImportError:
        pass
    import aiohttp

    async def bare_aiohttp() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            slots = asyncio.Semaphore(concurrency)

            async def get(url: str) -> bytes:
                async with slots, session.get(url) as response:
                    return b"".join([chunk async for chunk in response.content.iter_any()])

            await get(urls[0])
            started = time.perf_counter()
            await asyncio.gather(*(get(url) for url in urls))
            return len(urls) / (time.perf_counter() - started)

    rates["aiohttp_bare"] = asyncio.run(bare_aiohttp())
    return {name: round(rate, 1) for name, rate in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server", choices=("aiohttp", "threading"), default="aiohttp")
    parser.add_argument("--compare", action="store_true", help="time the other clients too")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.server)
        return

    import aiohttp

    with tempfile.TemporaryDirectory(prefix="http-fetch-") as folder:
        payloads = make_jpegs(Path(folder), args.images)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", folder, "--server", args.server],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            port = int(server.stdout.readline())
            urls = [f"http://127.0.0.1:{port}/img/{index}.jpg" for index in range(args.images)]
            runs = [fetcher_run(urls, payloads, args.concurrency) for _ in range(args.repeats)]
            alternatives = alternative_rates(urls, args.concurrency) if args.compare else None
        finally:
            server.kill()
            server.wait()
    median = sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]
    report = {
        "client": f"captioning.sources.http_fetch.HttpFetcher (aiohttp {aiohttp.__version__}, "
        "one event loop thread)",
        "server": f"{args.server} in a subprocess on loopback",
        "images": args.images,
        "mean_image_bytes": round(statistics.mean(map(len, payloads))),
        "concurrency": args.concurrency,
        "cores": len(os.sched_getaffinity(0)),
        "images_per_s": median["images_per_s"],
        "bytes_per_s": median["bytes_per_s"],
        "wall_s": median["wall_s"],
        "client_cpu_ms_per_image": median["client_cpu_ms_per_image"],
        "runs": runs,
        "target_images_per_s": TARGET_IMAGES_PER_S,
        "meets_target": median["images_per_s"] >= TARGET_IMAGES_PER_S,
    }
    if alternatives is not None:
        report["alternatives_images_per_s"] = alternatives
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
