"""Sampling a captions table too large to load: lowest, highest and random rows.

The table is given as the data files of one committed version
(``captioning.tables.committed_files``), streamed as record batches, file after file,
and three bounded selections run over the stream: the k lowest scores, the k highest scores and a
uniform random sample of k rows. Memory stays O(k) whatever the row count, and
only the rows that enter a selection are turned into Python objects.

The random sample is reservoir sampling by random keys: every row draws a uniform
key and the k rows with the smallest keys are kept. That is a uniform sample
without replacement, and it reuses the same bounded "k smallest" selection.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from captioning import storage
from captioning.errors import UserError

REQUIRED_COLUMNS = ("image_uri", "caption", "score")
OPTIONAL_COLUMNS = ("alternatives", "width", "height", "model_id")

LOWEST, HIGHEST, RANDOM, ALL = "lowest", "highest", "random", "all"


class BoundedSmallest:
    """Keeps the ``capacity`` rows with the smallest keys seen so far (first seen wins ties)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = np.empty(0, dtype=np.float64)
        self.rows: list[dict] = []

    def offer(self, keys: np.ndarray, batch: pa.RecordBatch) -> None:
        if self.capacity <= 0 or len(keys) == 0:
            return
        candidates = np.flatnonzero(~np.isnan(keys))
        if len(self.rows) == self.capacity:
            # Full: only keys strictly below the current worst can get in.
            candidates = candidates[keys[candidates] < self.keys.max()]
        if len(candidates) > self.capacity:
            nearest = np.argpartition(keys[candidates], self.capacity - 1)[: self.capacity]
            candidates = np.sort(candidates[nearest])
        if len(candidates) == 0:
            return
        merged_keys = np.concatenate([self.keys, keys[candidates]])
        merged_rows = self.rows + batch.take(pa.array(candidates)).to_pylist()
        keep = np.argsort(merged_keys, kind="stable")[: self.capacity]
        self.keys = merged_keys[keep]
        self.rows = [merged_rows[i] for i in keep]


@dataclass
class SampledCaption:
    """One gallery row, with the selections it was picked by."""

    image_uri: str
    caption: str
    score: float
    width: int | None = None
    height: int | None = None
    model_id: str | None = None
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass
class CaptionSample:
    rows: list[SampledCaption]
    total_rows: int
    files: list[str]
    complete: bool  # True when the table was small enough to keep every row
    score_min: float | None = None
    score_max: float | None = None
    score_mean: float | None = None
    model_ids: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file (local or ``gs://``) opened for streaming: the footer first, then
    one row group at a time."""
    with storage.open_binary(path) as stream, pq.ParquetFile(stream) as parquet:
        yield parquet


def iter_batches(files: Iterable[str], columns: list[str], batch_size: int) -> Iterator:
    for path in files:
        with open_parquet(path) as parquet:
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)


def _columns(files: list[str]) -> tuple[list[str], int]:
    """The columns to read (checked against the first file) and the total row count."""
    total = 0
    names: list[str] = []
    for index, path in enumerate(files):
        with open_parquet(path) as parquet:
            total += parquet.metadata.num_rows
            if index == 0:
                names = parquet.schema_arrow.names
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise UserError(f"{files[0]} is not a captions table: no column {', '.join(missing)}")
    return [*REQUIRED_COLUMNS, *(name for name in OPTIONAL_COLUMNS if name in names)], total


def _to_sampled(row: dict, group: str) -> SampledCaption:
    return SampledCaption(
        image_uri=row["image_uri"],
        caption=row["caption"],
        score=float("nan") if row["score"] is None else float(row["score"]),
        width=row.get("width"),
        height=row.get("height"),
        model_id=row.get("model_id"),
        alternatives=[(a["caption"], float(a["score"])) for a in row.get("alternatives") or []],
        groups=[group],
    )


def sample_captions(
    files: list[str],
    lowest: int,
    highest: int,
    random: int,
    seed: int = 0,
    batch_size: int = 65_536,
) -> CaptionSample:
    """Stream ``files`` (the data files of one captions table version) and return the
    sampled rows, lowest score first.

    When the whole table has no more rows than the three samples together, every
    row is kept instead (group ``all``); a table without files is empty, not an error.
    """
    if not files:
        return CaptionSample(rows=[], total_rows=0, files=[], complete=True)
    columns, total = _columns(files)
    keep_all = total <= lowest + highest + random
    selections = {
        LOWEST: BoundedSmallest(total if keep_all else lowest),
        HIGHEST: BoundedSmallest(0 if keep_all else highest),
        RANDOM: BoundedSmallest(0 if keep_all else random),
    }
    rng = np.random.default_rng(seed)
    model_ids: Counter[str] = Counter()
    score_sum, score_min, score_max, scored = 0.0, np.inf, -np.inf, 0
    seen = 0
    for batch in iter_batches(files, columns, batch_size):
        scores = batch.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
        # Keeping everything: key by position, so rows without a usable score stay too.
        positions = np.arange(seen, seen + len(scores), dtype=np.float64)
        seen += len(scores)
        selections[LOWEST].offer(positions if keep_all else scores, batch)
        selections[HIGHEST].offer(-scores, batch)
        selections[RANDOM].offer(rng.random(len(scores)), batch)
        finite = scores[np.isfinite(scores)]
        if len(finite):
            score_sum += float(finite.sum())
            score_min = min(score_min, float(finite.min()))
            score_max = max(score_max, float(finite.max()))
            scored += len(finite)
        if "model_id" in columns:
            for entry in batch.column("model_id").value_counts().to_pylist():
                model_ids[entry["values"]] += entry["counts"]

    by_uri: dict[str, SampledCaption] = {}
    for group, selection in selections.items():
        for row in selection.rows:
            sampled = by_uri.get(row["image_uri"])
            if sampled is None:
                by_uri[row["image_uri"]] = _to_sampled(row, ALL if keep_all else group)
            elif group not in sampled.groups:
                sampled.groups.append(group)
    return CaptionSample(
        rows=sorted(by_uri.values(), key=lambda row: (math.isnan(row.score), row.score)),
        total_rows=total,
        files=files,
        complete=keep_all,
        score_min=score_min if scored else None,
        score_max=score_max if scored else None,
        score_mean=score_sum / scored if scored else None,
        model_ids=dict(model_ids.most_common()),
    )
