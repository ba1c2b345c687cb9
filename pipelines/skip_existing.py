"""SkipExisting: leave out URIs that already have a caption in the committed table.

It reads the data files of the captions table's snapshot that the run started from
(never a file a run wrote but did not commit), and joins them with the listed URIs in
the pipeline (CoGroupByKey), not in one worker's memory, so it works the same for a
hundred million URIs. It takes URIs, or (uri, bytes) pairs (the members of a
WebDataset shard, known only once the shard is read).
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.metrics import NAMESPACE, SKIPPED_EXISTING


def _only_new(joined):
    _, groups = joined
    wanted = list(groups["wanted"])
    if groups["existing"]:
        Metrics.counter(NAMESPACE, SKIPPED_EXISTING).inc(len(wanted))
        return
    yield from wanted


def _uri(element) -> str:
    return element[0] if isinstance(element, tuple) else element


class SkipExisting(beam.PTransform):
    def __init__(self, committed_files: Sequence[str]) -> None:
        super().__init__()
        self.committed_files = list(committed_files)

    def expand(self, uris):
        existing = (
            uris.pipeline
            | "CommittedFiles" >> beam.Create(self.committed_files)
            | "ReadExisting" >> beam.io.ReadAllFromParquet(columns=["image_uri"])
            | "KeyExisting" >> beam.Map(lambda row: (row["image_uri"], True))
        )
        wanted = uris | "KeyWanted" >> beam.Map(lambda element: (_uri(element), element))
        return (
            {"wanted": wanted, "existing": existing}
            | "Join" >> beam.CoGroupByKey()
            | "KeepWanted" >> beam.Filter(lambda joined: bool(joined[1]["wanted"]))
            | "OnlyNew" >> beam.FlatMap(_only_new)
        )
