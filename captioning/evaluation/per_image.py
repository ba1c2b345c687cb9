"""Per-image evaluation results: which images a model captions worst.

One row per scored image with the columns ``image, caption, references, cider``
(references joined by ``" | "``), worst CIDEr first; ``captioning evaluate
--per-image FILE.csv`` writes them and ``captioning report --evaluation FILE.csv``
reads them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PER_IMAGE_COLUMNS = ("image", "caption", "references", "cider")
REFERENCE_SEPARATOR = " | "


def per_image_rows(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    cider_by_image: Mapping[str, float],
) -> list[dict[str, str | float]]:
    """One row per scored image, worst CIDEr first (ties by image name, so runs agree)."""
    rows = [
        {
            "image": image,
            "caption": hypotheses[image],
            # A reference holding the separator would split wrongly when read back.
            "references": REFERENCE_SEPARATOR.join(
                " ".join(r.replace("|", " ").split()) for r in references[image]
            ),
            "cider": float(cider_by_image[image]),
        }
        for image in cider_by_image
    ]
    return sorted(rows, key=lambda row: (row["cider"], row["image"]))


def write_per_image_csv(rows: Iterable[Mapping[str, str | float]], path: str | Path) -> None:
    """Write rows from ``per_image_rows`` as CSV with a header (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_IMAGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "cider": f"{row['cider']:.6f}"})
