"""What both Beam jobs (caption, features) do the same way around their pipeline: name
the run, total its Beam metrics into a summary, write a file whole, and clean up the
temporary folders of runs that never finished.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import time
import uuid
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from captioning import run_layout, storage
from pipelines import metrics as names

# "<UTC stamp>-<6 hex>": sorts by start time; every file a run writes carries it.
RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")
BEAM_TEMP = "beam-temp-"


def new_run_id() -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def metric_totals(result) -> dict[str, int]:
    """Committed (else attempted) counter values of our namespace, summed over steps."""
    query = result.metrics().query(MetricsFilter().with_namespace(names.NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    for distribution in query["distributions"]:
        value = distribution.committed or distribution.attempted
        if value is not None:
            totals[distribution.key.metric.name] = int(value.sum)
    return totals


def errors_by_stage(totals: dict[str, int]) -> dict[str, dict[str, int]]:
    """stage -> error type -> count, from the ``errors.<stage>.<type>`` counters."""
    errors: dict[str, dict[str, int]] = {}
    for name, value in sorted(totals.items()):
        if name.startswith(names.ERRORS_PREFIX) and value:
            _, stage, error_type = name.split(".", 2)
            errors.setdefault(stage, {})[error_type] = value
    return errors


def build_summary(
    totals: dict[str, int], seconds: float, model_id: str, run_id: str, output: str
) -> dict[str, Any]:
    """The caption job's summary (``DIR/summary.json``)."""
    errors = errors_by_stage(totals)
    error_total = sum(sum(kinds.values()) for kinds in errors.values())
    captioned = totals.get(names.IMAGES_CAPTIONED, 0)
    inputs = captioned + error_total
    skipped = totals.get(names.SKIPPED_EXISTING, 0)
    # Of everything listed: a nightly run that retries last night's few broken files
    # among a million already captioned ones is not a 100% failure.
    listed = inputs + skipped
    commit_ms = totals.get(names.COMMIT_MILLISECONDS)
    return {
        "run_id": run_id,
        "output": output,
        "model_id": model_id,
        "inputs": inputs,
        "skipped_existing": skipped,
        "captioned": captioned,
        "errors": error_total,
        "error_rate": round(error_total / listed, 6) if listed else None,
        "errors_by_stage": errors,
        "wall_seconds": round(seconds, 2),
        "commit_seconds": round(commit_ms / 1000, 3) if commit_ms is not None else None,
        "images_per_second": round(captioned / seconds, 2) if seconds > 0 else None,
        "jpegs_routed_to_gpu": totals.get(names.ROUTED_TO_GPU, 0),
        "jpegs_decoded_by_nvimgcodec": totals.get(names.DECODED_BY_NVIMGCODEC, 0),
    }


def write_whole(path: str, data: bytes, mime_type: str = "application/json") -> None:
    """Write ``path`` whole or not at all, so a reader (or a kill) never meets half of it:
    locally a temporary file beside it, synced and renamed over it (``os.replace`` is
    atomic on one filesystem); on an object store one object write, visible whole."""
    if storage.is_remote(path):
        storage.write_bytes(path, data, content_type=mime_type)
        return
    path = storage.local_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".tmp") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


def write_summary(summary: dict[str, Any], output: str) -> str:
    """Write ``DIR/summary.json``, whole."""
    path = run_layout.summary_path(output)
    write_whole(path, json.dumps(summary, indent=2).encode())
    return path


def remove_beam_temp(
    folder: str, run_id: str, retention_hours: float, replaced: str | None = None
) -> list[str]:
    """Remove Beam's ``beam-temp-*`` folders directly in ``folder`` that a run left
    behind: this run's (``run_id``) and the run it replaced, at once; those of runs that
    were killed, once nothing in them changed for ``retention_hours`` (a younger one may
    be a slower run still writing). Returns what was removed: each folder's files, then
    the folder. A folder whose name carries no run id is not ours and stays."""
    cutoff = time.time() - retention_hours * 3600
    removed: list[str] = []
    for temp in storage.folders(storage.join(folder, BEAM_TEMP + "*")):
        run = RUN_ID.search(temp.rsplit("/", 1)[-1])
        if run is None:
            continue
        if run.group(0) not in (run_id, replaced) and (storage.newest_change(temp) or 0) >= cutoff:
            continue
        removed += [*storage.glob(storage.join(temp, "**")), temp]
        storage.remove_tree(temp)
    return removed
