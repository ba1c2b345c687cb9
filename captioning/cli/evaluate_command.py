"""``captioning evaluate``: caption-quality metrics of a bundle on a captioned set."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from captioning import precision

log = logging.getLogger("captioning.evaluate")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="BLEU-1..4, METEOR, ROUGE-L and CIDEr of a bundle on captioned images",
        description="Caption the images of a captioned set and score them against its "
        "references. Uses the set's test split when it has one, else every image.",
    )
    parser.add_argument("--model", required=True, help="model bundle directory")
    parser.add_argument("--captions", required=True, help="captions file (any train format)")
    parser.add_argument("--images", required=True, help="directory holding the images")
    parser.add_argument("--format", choices=("coco", "karpathy", "flickr8k", "csv"))
    parser.add_argument(
        "--split",
        choices=("auto", "all", "train", "val", "test"),
        default="auto",
        help="which images to score (auto: test if present, else all)",
    )
    parser.add_argument("--beam-width", type=int, help="beams (1 = greedy; default: bundle's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--precision",
        choices=precision.CHOICES,
        help="dtype policy (default: the bundle's own, normally auto)",
    )
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--per-image",
        metavar="FILE.csv",
        help="also write one row per scored image to this CSV (written only when given): "
        "image, caption, references (joined by ' | '), cider; worst CIDEr first",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioning.errors import UserError
    from captioning.evaluation.evaluate import evaluate_bundle
    from captioning.evaluation.per_image import write_per_image_csv

    if args.per_image is not None:
        # Refuse an unwritable path now, not after captioning the whole set.
        target = Path(args.per_image)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
        if target.is_dir():
            raise UserError(f"cannot write {target}: it is a directory")
    metrics = evaluate_bundle(
        args.model,
        args.captions,
        args.images,
        format=args.format,
        split=args.split,
        beam_width=args.beam_width,
        batch_size=args.batch_size,
        precision=args.precision,
        limit=args.limit,
        per_image=args.per_image is not None,
    )
    if args.per_image is not None:
        rows = metrics.pop("per_image")
        try:
            write_per_image_csv(rows, args.per_image)
        except OSError as error:
            raise UserError(f"cannot write {args.per_image}: {error.strerror or error}") from None
        log.info("per-image results of %d images in %s", len(rows), args.per_image)
    if args.json:
        print(
            json.dumps(
                {
                    key: metrics[key]
                    for key in (
                        "bleu1",
                        "bleu2",
                        "bleu3",
                        "bleu4",
                        "meteor",
                        "rouge_l",
                        "cider",
                        "count",
                    )
                }
            )
        )
    else:
        for key, value in metrics.items():
            shown = (
                "n/a (no Java)"
                if value is None
                else (f"{value:.4f}" if isinstance(value, float) else value)
            )
            print(f"{key:>12}  {shown}")
    return 0
