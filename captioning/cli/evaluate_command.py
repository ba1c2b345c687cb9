"""``captioning evaluate``: caption-quality metrics of a bundle on a captioned set."""

from __future__ import annotations

import argparse
import json
import logging

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
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help="dtype policy (default: the bundle's own, normally auto)",
    )
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioning.evaluation.evaluate import evaluate_bundle

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
    )
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
