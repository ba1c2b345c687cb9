"""The JSON summary written beside each run's tables, from the job's Beam metrics."""

from __future__ import annotations

import json
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from pipelines import metrics as names


def counters(result) -> dict[str, int]:
    """Committed (else attempted) counter values of our namespace, summed over steps."""
    query = result.metrics().query(MetricsFilter().with_namespace(names.NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def build_summary(
    totals: dict[str, int], seconds: float, model_id: str, run_id: str, output: str
) -> dict[str, Any]:
    errors: dict[str, dict[str, int]] = {}
    for name, value in totals.items():
        if name.startswith(names.ERRORS_PREFIX) and value:
            _, stage, error_type = name.split(".", 2)
            errors.setdefault(stage, {})[error_type] = value
    error_total = sum(sum(kinds.values()) for kinds in errors.values())
    captioned = totals.get(names.IMAGES_CAPTIONED, 0)
    return {
        "run_id": run_id,
        "output": output,
        "model_id": model_id,
        "inputs": captioned + error_total,
        "skipped_existing": totals.get(names.SKIPPED_EXISTING, 0),
        "captioned": captioned,
        "errors": error_total,
        "errors_by_stage": errors,
        "wall_seconds": round(seconds, 2),
        "images_per_second": round(captioned / seconds, 2) if seconds > 0 else None,
    }


def summary_path(output: str) -> str:
    return f"{output}_summary.json"


def write_summary(summary: dict[str, Any], output: str) -> str:
    path = summary_path(output)
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(summary, indent=2).encode())
    return path
