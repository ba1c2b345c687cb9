"""What every dataset reader produces: caption records plus a report of bad rows."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image. ``image`` is a path relative to the images directory."""

    image: str
    caption: str
    split: str


@dataclass
class ReadReport:
    """Counts of what a reader saw; bad rows are counted by reason, with a few examples."""

    source: str
    rows: int = 0
    bad_rows: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, reason: str, example: str) -> None:
        self.bad_rows[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(example)

    @property
    def bad_total(self) -> int:
        return sum(self.bad_rows.values())

    def summary(self) -> str:
        text = f"{self.source}: {self.rows} caption rows, {self.rows - self.bad_total} kept"
        for reason, count in sorted(self.bad_rows.items()):
            text += f"; {count} skipped ({reason}, e.g. {', '.join(self.examples[reason])})"
        return text


@dataclass
class CaptionSet:
    records: list[CaptionRecord]
    report: ReadReport

    def split(self, name: str) -> list[CaptionRecord]:
        return [record for record in self.records if record.split == name]

    def images(self, split: str | None = None) -> list[str]:
        """Unique image names in first-seen order."""
        seen: dict[str, None] = {}
        for record in self.records:
            if split is None or record.split == split:
                seen.setdefault(record.image, None)
        return list(seen)

    def captions_by_image(self, split: str | None = None) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for record in self.records:
            if split is None or record.split == split:
                grouped.setdefault(record.image, []).append(record.caption)
        return grouped


def seeded_split(images: list[str], seed: int, val_fraction: float = 0.2) -> dict[str, str]:
    """Assign whole images (never single captions) to train/val, reproducibly."""
    ordered = sorted(set(images))
    random.Random(seed).shuffle(ordered)
    val_count = round(len(ordered) * val_fraction)
    return {image: ("val" if index < val_count else "train") for index, image in enumerate(ordered)}
