"""SkipExisting: leave out URIs that already have a caption under the output prefix.

A join in the pipeline (CoGroupByKey), not a set in one worker's memory, so it
works the same for a hundred million URIs.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.metrics import NAMESPACE, SKIPPED_EXISTING


def _only_new(joined):
    uri, groups = joined
    if groups["existing"]:
        Metrics.counter(NAMESPACE, SKIPPED_EXISTING).inc()
        return
    yield uri


class SkipExisting(beam.PTransform):
    def __init__(self, existing_pattern: str, validate: bool = True) -> None:
        super().__init__()
        self.existing_pattern = existing_pattern
        # Beam checks the pattern matches when the pipeline is built; a dry run that
        # stays offline cannot, and builds the step without looking.
        self.validate = validate

    def expand(self, uris):
        existing = (
            uris.pipeline
            | "ReadExisting"
            >> beam.io.ReadFromParquet(
                self.existing_pattern, columns=["image_uri"], validate=self.validate
            )
            | "KeyExisting" >> beam.Map(lambda row: (row["image_uri"], True))
        )
        wanted = uris | "KeyWanted" >> beam.Map(lambda uri: (uri, True))
        return (
            {"wanted": wanted, "existing": existing}
            | "Join" >> beam.CoGroupByKey()
            | "KeepWanted" >> beam.Filter(lambda joined: bool(joined[1]["wanted"]))
            | "OnlyNew" >> beam.FlatMap(_only_new)
        )
