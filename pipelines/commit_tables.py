"""CommitTables: the one step that makes a caption run's output visible, atomically.

It runs once, after both tables' data files are written (their paths are its input), and
commits them through ``captioning.tables``: the captions table first (``append`` for
``--skip-existing``, ``replace`` for a full rerun), then the errors table
(``replace_read``: this run's errors replace those of the snapshot it started from).
Then it vacuums both tables.

What it holds back, so that a night gone wrong does not destroy earlier captions:

- a full rerun that captioned nothing does not replace earlier captions unless
  ``--allow-empty``;
- a full rerun whose error rate is above ``--max-error-rate`` commits its errors (they
  are data) but does not replace earlier captions; they stay.

A conflict with a concurrent run raises ``CommitConflictError``, which fails the job.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from captioning import run_layout, storage, tables
from pipelines.launcher import remove_beam_temp
from pipelines.metrics import COMMIT_MILLISECONDS, NAMESPACE

log = logging.getLogger("captioning.pipeline")


@dataclass(frozen=True)
class CommitPlan:
    """Everything the commit step needs, fixed when the job is built."""

    output: str
    run_id: str
    model_id: str
    append: bool  # --skip-existing: add to the captions; otherwise replace them
    captions_start: int  # the snapshot versions the run started from
    errors_start: int
    max_error_rate: float
    allow_empty: bool
    retention_hours: int
    earlier_captions: bool = True  # the start snapshot holds captions a replace removes
    # Where no launcher waits for the job (Dataflow, flex templates), an error rate above
    # the limit fails the job after its commit, so that the scheduler alerts.
    fail_job_on_alert: bool = False

    def app_id(self, table: str) -> str:
        return f"captioning-caption-{self.run_id}-{table}"


@dataclass(frozen=True)
class Decision:
    commit_captions: bool
    error_rate: float | None
    reason: str = ""


def decide(plan: CommitPlan, captions: int, errors: int, listed: int = 0) -> Decision:
    """Which tables to commit, from the row counts of the run's files and the number of
    URIs listed (already captioned ones included: the error rate is of the archive)."""
    inputs = max(listed, captions + errors)
    rate = errors / inputs if inputs else None
    if plan.append or plan.allow_empty or not plan.earlier_captions:
        return Decision(True, rate)  # nothing earlier would be removed
    if captions == 0 and not plan.allow_empty:
        return Decision(False, rate, "the run captioned nothing (--allow-empty commits that)")
    if rate is not None and rate > plan.max_error_rate:
        return Decision(
            False,
            rate,
            f"error rate {rate:.3f} is above --max-error-rate {plan.max_error_rate:g}",
        )
    return Decision(True, rate)


def describe_files(table: str, paths: list[str]) -> list[tables.DataFile]:
    """The run's written files in ``table`` with size and row count (Parquet footers)."""
    files = []
    folder = table.rstrip("/") + "/"
    for path in sorted(p for p in paths if p.startswith(folder)):
        with storage.open_binary(path) as handle:
            # The size from the open handle: no listing call per file on an object store.
            size = handle.seek(0, os.SEEK_END)
            metadata = pq.ParquetFile(handle).metadata
        files.append(tables.DataFile(path[len(folder) :], size, metadata.num_rows))
    return files


def _tidy(tables_written, committed: list[str], plan: CommitPlan) -> None:
    """After the commit, best effort: a failure here must not fail a committed run."""
    try:
        _remove_uncommitted(tables_written, committed)
        for table, _ in tables_written:
            remove_beam_temp(table, plan.run_id, plan.retention_hours)
            tables.vacuum(table, plan.retention_hours)
    except Exception as error:  # noqa: BLE001 - the next run's vacuum tries again
        log.warning("tidying the tables after the commit failed (%s); the next run retries", error)


def hold_for_test(point: str) -> None:
    """Test hook of the kill and concurrency tests (tests/pipelines/test_nightly_safety.py):
    with ``CAPTIONING_TEST_HOLD=POINT=FILE`` the commit step announces POINT on stderr and
    waits there until FILE exists, so a test can SIGKILL it, or release two runs at once."""
    hold = os.environ.get("CAPTIONING_TEST_HOLD", "")
    name, _, release = hold.partition("=")
    if name != point:
        return
    print(f"captioning-test-hold {point}", file=sys.stderr, flush=True)
    while not os.path.exists(release):
        time.sleep(0.05)


class CommitTables(beam.DoFn):
    """The list of every file the run wrote -> one commit per table; yields the outcome."""

    def __init__(self, plan: CommitPlan) -> None:
        self.plan = plan

    def process(self, written: list[str], listed: int = 0):
        plan = self.plan
        hold_for_test("written")
        started = time.monotonic()
        captions_table = run_layout.captions_table(plan.output)
        errors_table = run_layout.errors_table(plan.output)
        caption_files = describe_files(captions_table, written)
        error_files = describe_files(errors_table, written)
        decision = decide(
            plan, sum(f.rows for f in caption_files), sum(f.rows for f in error_files), listed
        )
        metadata = {"run_id": plan.run_id, "model_id": plan.model_id}
        committed: list[str] = []  # full paths
        versions = {}
        if decision.commit_captions:
            committed += [run_layout.join(captions_table, f.path) for f in caption_files if f.rows]
            versions["captions"] = tables.commit(
                captions_table,
                [f for f in caption_files if f.rows],
                "append" if plan.append else "replace",
                plan.captions_start,
                plan.app_id(run_layout.CAPTIONS_TABLE),
                run_layout.CAPTIONS_SCHEMA,
                metadata,
            )
        else:
            log.warning("captions not committed: %s; earlier captions stay", decision.reason)
        hold_for_test("between-commits")
        committed += [run_layout.join(errors_table, f.path) for f in error_files if f.rows]
        versions["errors"] = tables.commit(
            errors_table,
            [f for f in error_files if f.rows],
            "replace_read",
            plan.errors_start,
            plan.app_id(run_layout.ERRORS_TABLE),
            run_layout.ERRORS_SCHEMA,
            metadata,
        )
        hold_for_test("committed")
        _tidy([(captions_table, caption_files), (errors_table, error_files)], committed, plan)
        elapsed = time.monotonic() - started
        Metrics.distribution(NAMESPACE, COMMIT_MILLISECONDS).update(int(elapsed * 1000))
        log.info(
            "committed run %s in %.2f s: %d captions, %d errors; table versions %s",
            plan.run_id,
            elapsed,
            sum(f.rows for f in caption_files) if decision.commit_captions else 0,
            sum(f.rows for f in error_files),
            versions,
        )
        rate = decision.error_rate
        if plan.fail_job_on_alert and rate is not None and rate > plan.max_error_rate:
            raise ErrorRateExceededError(
                f"committed, but the error rate {rate:.3f} is above --max-error-rate "
                f"{plan.max_error_rate:g} (see {run_layout.errors_table(plan.output)})"
            )
        yield {"captions_committed": decision.commit_captions, "versions": versions}


class ErrorRateExceededError(Exception):
    """Raised after the commit on runners where nobody waits for the job's summary."""


def _remove_uncommitted(
    written: list[tuple[str, list[tables.DataFile]]], committed: list[str]
) -> None:
    """This run's files that no version holds (empty ones, held-back captions)."""
    paths = {run_layout.join(table, f.path) for table, files in written for f in files}
    for path in sorted(paths - set(committed)):
        storage.delete(path)
