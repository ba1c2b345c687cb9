"""CSV captions: a header with ``image`` and ``caption`` columns, one caption per row."""

from __future__ import annotations

import csv
from pathlib import Path

from captioning.data.records import CaptionRecord, CaptionSet, ReadReport, seeded_split
from captioning.errors import UserError


def read_csv_captions(
    path: str | Path, images_dir: str | Path | None, seed: int = 0, val_fraction: float = 0.2
) -> CaptionSet:
    report = ReadReport(source=str(path))
    rows: list[tuple[str, str]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"image", "caption"} <= set(reader.fieldnames):
            raise UserError(
                f"{path}: CSV captions need a header with 'image' and 'caption' columns"
            )
        for line, row in enumerate(reader, start=2):
            report.rows += 1
            image = (row.get("image") or "").strip()
            caption = (row.get("caption") or "").strip()
            if not image:
                report.reject("no image name", f"line {line}")
            elif not caption:
                report.reject("empty caption", f"line {line}")
            elif images_dir is not None and not (Path(images_dir) / image).is_file():
                report.reject("missing image", image)
            else:
                rows.append((image, caption))
    splits = seeded_split([image for image, _ in rows], seed, val_fraction)
    records = [CaptionRecord(image, caption, splits[image]) for image, caption in rows]
    return CaptionSet(records, report)
