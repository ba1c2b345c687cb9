"""One entry point for every caption format, with the format inferred from the file."""

from __future__ import annotations

from pathlib import Path

from captioning.data.coco import load_json, read_coco, read_karpathy
from captioning.data.csv_captions import read_csv_captions
from captioning.data.flickr8k import read_flickr8k
from captioning.data.records import CaptionSet
from captioning.errors import UserError

FORMATS = ("coco", "karpathy", "flickr8k", "csv")


def infer_format(path: str | Path) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".txt" or "token" in path.name.lower():
        return "flickr8k"
    if suffix == ".json":
        data = load_json(path)
        if "annotations" in data:
            return "coco"
        images = data.get("images") or [{}]
        if "sentences" in images[0]:
            return "karpathy"
    raise UserError(f"cannot tell the caption format of {path}; pass --format {'|'.join(FORMATS)}")


def read_captions(
    path: str | Path,
    images_dir: str | Path | None = None,
    format: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> CaptionSet:
    """Read any supported caption file into records with train/val(/test) splits.

    ``images_dir`` given: rows whose image file is missing are reported and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"captions file {path} does not exist")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise UserError(f"images directory {images_dir} does not exist")
    format = format or infer_format(path)
    if format == "csv":
        return read_csv_captions(path, images_dir, seed, val_fraction)
    if format == "flickr8k":
        return read_flickr8k(path, images_dir, seed, val_fraction)
    if format == "coco":
        return read_coco(load_json(path), str(path), images_dir, seed, val_fraction)
    if format == "karpathy":
        return read_karpathy(load_json(path), str(path), images_dir)
    raise UserError(f"unknown caption format {format!r}; choose from {', '.join(FORMATS)}")
