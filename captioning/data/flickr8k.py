"""The Flickr8k token file (``image.jpg#N<TAB>caption``) and its split files."""

from __future__ import annotations

import re
from pathlib import Path

from captioning.data.records import CaptionRecord, CaptionSet, ReadReport, seeded_split

SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
# A Flickr8k image id is a file name ending in .jpg; the caption index follows '#'.
_ROW = re.compile(r"^(?P<image>[^#\s]+)#(?P<index>\d+)$")
_IMAGE_NAME = re.compile(r"^[\w-]+\.jpg$")


def read_split_files(directory: Path) -> dict[str, str]:
    """image -> split, from the split files beside the token file (empty if absent)."""
    splits: dict[str, str] = {}
    for split, name in SPLIT_FILES.items():
        file = directory / name
        if file.is_file():
            for line in file.read_text().split():
                splits[line.strip()] = split
    return splits


def read_flickr8k(
    path: str | Path, images_dir: str | Path | None, seed: int = 0, val_fraction: float = 0.2
) -> CaptionSet:
    path = Path(path)
    report = ReadReport(source=str(path))
    splits = read_split_files(path.parent)
    rows: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.rows += 1
            key, _, caption = line.rstrip("\n").partition("\t")
            match = _ROW.match(key.strip())
            caption = caption.strip()
            if match is None or not _IMAGE_NAME.match(match["image"]):
                # e.g. "2258277193_586949ec62.jpg.1#0": reported, never merged into
                # 2258277193_586949ec62.jpg nor dropped silently.
                report.reject("malformed image id", f"{key.strip()} (line {line_number})")
            elif not caption:
                report.reject("empty caption", f"line {line_number}")
            elif images_dir is not None and not (Path(images_dir) / match["image"]).is_file():
                report.reject("missing image", match["image"])
            else:
                rows.append((match["image"], caption))
    if not splits:
        splits = seeded_split([image for image, _ in rows], seed, val_fraction)
    records = []
    for image, caption in rows:
        split = splits.get(image)
        if split is None:
            report.reject("image in no split file", image)
            continue
        records.append(CaptionRecord(image, caption, split))
    return CaptionSet(records, report)
