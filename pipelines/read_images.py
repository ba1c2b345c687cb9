"""ReadImages: input URIs -> (uri, bytes), and one read error row per input that fails.

Local paths and ``gs://`` objects are read one at a time through
``captioning.sources.read_limits`` (a size limit and a deadline; a FIFO, a device or
a folder is refused before it is opened). ``http(s)://`` URLs are fetched in batches,
many in flight at once, by ``captioning.sources.http_fetch``. ``ReadShards`` turns
each WebDataset tar shard into its image members, keyed ``SHARD.tar/KEY.EXT``.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from captioning import storage
from captioning.sources import uris as uri_kinds
from captioning.sources.http_fetch import HttpFetcher, HttpSettings
from captioning.sources.read_limits import read_limited, read_local_file, refuse_special_file
from captioning.sources.tar_shards import ShardError, read_shard
from pipelines.error_rows import DeadLettersToErrorRows, counted_error_row
from pipelines.metrics import IMAGES_READ, INPUTS, NAMESPACE

ERRORS = "errors"


@dataclass(frozen=True)
class ReadSettings:
    """How far one read may go (``--max-image-bytes``, ``--read-timeout``), and how
    URLs are fetched (``--http-concurrency``, ``--user-agent``, ``--ignore-robots-tag``)."""

    max_bytes: int = 128 * 1024 * 1024
    timeout_s: float = 60.0
    http_concurrency: int = 64
    user_agent: str = HttpSettings.user_agent
    honour_robots_tag: bool = True

    def http(self) -> HttpSettings:
        return HttpSettings(
            concurrency=self.http_concurrency,
            connect_timeout_s=min(10.0, self.timeout_s),
            read_timeout_s=self.timeout_s,
            max_bytes=self.max_bytes,
            user_agent=self.user_agent,
            honour_robots_tag=self.honour_robots_tag,
        )


def _read_ok(uri: str, data: bytes) -> tuple[str, bytes]:
    Metrics.counter(NAMESPACE, INPUTS).inc()
    Metrics.counter(NAMESPACE, IMAGES_READ).inc()
    return uri, data


def _read_failed(uri: str, error_type: str, message: str) -> beam.pvalue.TaggedOutput:
    Metrics.counter(NAMESPACE, INPUTS).inc()
    return beam.pvalue.TaggedOutput(ERRORS, counted_error_row(uri, "read", error_type, message))


class ReadStored(beam.DoFn):
    """A local path or a ``gs://`` object -> (uri, bytes); failures raise, and
    ``with_exception_handling`` makes them error rows."""

    def __init__(self, settings: ReadSettings) -> None:
        self.settings = settings

    def process(self, uri: str):
        Metrics.counter(NAMESPACE, INPUTS).inc()
        limit, timeout = self.settings.max_bytes, self.settings.timeout_s
        if uri_kinds.is_local(uri):
            data = read_local_file(uri, limit, timeout)
        else:
            with storage.open_binary(uri) as handle:
                data = read_limited(handle, uri, limit, timeout)
        Metrics.counter(NAMESPACE, IMAGES_READ).inc()
        yield uri, data


class FetchUrls(beam.DoFn):
    """A batch of URLs -> (url, bytes) for each one fetched, an error row for each not."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.fetcher: HttpFetcher | None = None

    def setup(self) -> None:
        self.fetcher = HttpFetcher(self.settings)

    def process(self, urls: list[str]):
        for url, result in self.fetcher.fetch_many(urls):
            if isinstance(result, bytes):
                yield _read_ok(url, result)
            else:
                yield _read_failed(url, result.error_type, str(result))

    def teardown(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()


class ReadImages(beam.PTransform):
    """URIs -> {"images": (uri, bytes), "errors": read error rows}."""

    def __init__(self, settings: ReadSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or ReadSettings()

    def expand(self, uris):
        web, stored = uris | "WebApart" >> beam.Partition(
            lambda uri, _: 0 if uri_kinds.is_web(uri) else 1, 2
        )
        good, bad = (
            stored | "ReadStored" >> beam.ParDo(ReadStored(self.settings)).with_exception_handling()
        )
        stored_errors = bad | "ReadErrorRows" >> beam.ParDo(DeadLettersToErrorRows("read"))
        concurrency = self.settings.http_concurrency
        fetched = (
            web
            # Batches of a few times the fetches in flight keep every connection busy.
            | "BatchUrls" >> beam.BatchElements(min_batch_size=1, max_batch_size=4 * concurrency)
            | "FetchUrls"
            >> beam.ParDo(FetchUrls(self.settings.http())).with_outputs(ERRORS, main="images")
        )
        return {
            "images": (good, fetched.images) | "AllRead" >> beam.Flatten(),
            "errors": (stored_errors, fetched[ERRORS]) | "AllReadErrors" >> beam.Flatten(),
        }


class ReadShardMembers(beam.DoFn):
    """A WebDataset shard -> (member uri, bytes) per image member; an error row per
    member it could not read, and one for a shard that is cut short or no tar."""

    def __init__(self, settings: ReadSettings) -> None:
        self.settings = settings

    def process(self, shard: str):
        try:
            if uri_kinds.is_local(shard):
                # A FIFO or device named like a shard is refused before it is opened.
                refuse_special_file(shard)
            handle = storage.open_binary(shard)
        except Exception as error:  # noqa: BLE001 - an unreadable shard is an error row
            error_type = getattr(error, "error_type", None) or type(error).__name__
            yield _read_failed(shard, error_type, str(error))
            return
        with handle:
            for item in read_shard(handle, shard, self.settings.max_bytes):
                if isinstance(item, ShardError):
                    yield _read_failed(item.uri, item.error_type, item.message)
                else:
                    yield _read_ok(item.uri, item.data)


class ReadShards(beam.PTransform):
    """Shard URIs -> {"images": (member uri, bytes), "errors": read error rows}."""

    def __init__(self, settings: ReadSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or ReadSettings()

    def expand(self, shards):
        read = shards | "ReadShardMembers" >> beam.ParDo(
            ReadShardMembers(self.settings)
        ).with_outputs(ERRORS, main="images")
        return {"images": read.images, "errors": read[ERRORS]}
