"""COCO captions JSON (``captions_train2017.json``) and Karpathy split JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from captioning.data.records import CaptionRecord, CaptionSet, ReadReport, seeded_split
from captioning.errors import UserError

# Karpathy's "restval" images are extra training data.
_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _image_ok(report: ReadReport, images_dir: str | Path | None, image: str) -> bool:
    if images_dir is not None and not (Path(images_dir) / image).is_file():
        report.reject("missing image", image)
        return False
    return True


def read_coco(
    data: dict[str, Any],
    source: str,
    images_dir: str | Path | None,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> CaptionSet:
    """COCO ``{"images": [{id, file_name}], "annotations": [{image_id, caption}]}``."""
    report = ReadReport(source=source)
    names = {image["id"]: image["file_name"] for image in data.get("images", [])}
    rows: list[tuple[str, str]] = []
    for annotation in data["annotations"]:
        report.rows += 1
        image = names.get(annotation.get("image_id"))
        caption = str(annotation.get("caption") or "").strip()
        if image is None:
            report.reject("unknown image id", str(annotation.get("image_id")))
        elif not caption:
            report.reject("empty caption", image)
        elif _image_ok(report, images_dir, image):
            rows.append((image, caption))
    splits = seeded_split([image for image, _ in rows], seed, val_fraction)
    return CaptionSet([CaptionRecord(i, c, splits[i]) for i, c in rows], report)


def read_karpathy(data: dict[str, Any], source: str, images_dir: str | Path | None) -> CaptionSet:
    """Karpathy ``{"images": [{filename, filepath?, split, sentences: [{raw}]}]}``."""
    report = ReadReport(source=source)
    records = []
    for entry in data["images"]:
        image = entry.get("filename", "")
        if entry.get("filepath"):
            image = f"{entry['filepath']}/{image}"
        split = _KARPATHY_SPLITS.get(entry.get("split", "train"))
        sentences = entry.get("sentences", [])
        report.rows += len(sentences)
        if split is None:
            for _ in sentences:
                report.reject("unknown split", f"{image} ({entry.get('split')})")
            continue
        present = _image_ok(report, images_dir, image) if sentences else False
        for index, sentence in enumerate(sentences):
            raw = str(sentence.get("raw") or "").strip()
            if not present:
                if index > 0:
                    report.reject("missing image", image)
            elif not raw:
                report.reject("empty caption", image)
            else:
                records.append(CaptionRecord(image, raw, split))
    return CaptionSet(records, report)


def load_json(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
