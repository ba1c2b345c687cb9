"""The worst-scoring images of a ``captioning evaluate --per-image`` CSV.

Columns: ``image, caption, references, cider`` (references joined with " | "), as
``captioning.evaluation.per_image`` writes them; ``image`` is the name under the
evaluated images folder.
One row per held-out image, so the file is read whole; only the worst rows are kept.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
from dataclasses import dataclass

from captioning import storage
from captioning.errors import UserError
from captioning.evaluation.per_image import PER_IMAGE_COLUMNS, REFERENCE_SEPARATOR


@dataclass(frozen=True)
class EvaluatedImage:
    image: str  # as written in the CSV
    image_uri: str  # where to read it from
    caption: str
    references: list[str]
    cider: float


@dataclass
class EvaluationWorst:
    path: str
    rows: list[EvaluatedImage]  # worst CIDEr first
    total: int
    mean_cider: float | None


def _image_uri(image: str, images_dir: str | None) -> str:
    # A URI of any scheme (file:// too) or an absolute path is where the image is.
    if images_dir is None or storage.scheme(image) is not None or image.startswith("/"):
        return image
    return f"{images_dir.rstrip('/')}/{image}"


def read_worst(path: str, count: int, images_dir: str | None = None) -> EvaluationWorst:
    """The ``count`` rows with the lowest CIDEr; relative image names are under ``images_dir``."""
    try:
        text = storage.read_bytes(path).decode("utf-8-sig")
    except Exception as error:  # noqa: BLE001 - OSError, or any google-api-core error for gs://
        raise UserError(f"cannot read evaluation file {path}: {error}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [name for name in PER_IMAGE_COLUMNS if name not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"evaluation file {path} has no column {', '.join(missing)}")
    total, cider_sum = 0, 0.0

    def rows():
        nonlocal total, cider_sum
        for line, row in enumerate(reader, start=2):
            try:
                cider = float(row["cider"])
            except (TypeError, ValueError):
                raise UserError(
                    f"{path}, line {line}: cider {row['cider']!r} is not a number"
                ) from None
            if math.isnan(cider):
                continue
            total += 1
            cider_sum += cider
            yield row, cider

    worst = heapq.nsmallest(count, rows(), key=lambda item: item[1])
    return EvaluationWorst(
        path=path,
        rows=[
            EvaluatedImage(
                image=row["image"],
                image_uri=_image_uri(row["image"], images_dir),
                caption=row["caption"],
                references=[r for r in (row["references"] or "").split(REFERENCE_SEPARATOR) if r],
                cider=cider,
            )
            for row, cider in worst
        ],
        total=total,
        mean_cider=cider_sum / total if total else None,
    )
