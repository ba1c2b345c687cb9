"""``captioning predict``: quick captions for a few local images, on stdout."""

from __future__ import annotations

import argparse
import json

from captioning import precision


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="caption a few images and print the captions",
        description="Print one line per image: path, caption and score (mean token "
        "log-probability). Use `captioning caption` for whole archives.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", required=True, help="model bundle directory")
    parser.add_argument("--beam-width", type=int, help="beams (1 = greedy; default: bundle's)")
    parser.add_argument(
        "--precision",
        choices=precision.CHOICES,
        help="dtype policy (default: the bundle's own, normally auto)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioning.bundle import load_bundle
    from captioning.errors import UserError
    from captioning.inference import caption_files

    if args.beam_width is not None and args.beam_width < 1:
        raise UserError("--beam-width must be at least 1")
    bundle = load_bundle(args.model, precision=args.precision)
    failures = 0
    for result in caption_files(bundle, args.images, beam_width=args.beam_width):
        if args.json:
            print(
                json.dumps(
                    {
                        "image": result.image,
                        "caption": result.caption,
                        "score": None if result.error else round(result.score, 4),
                        "error": result.error,
                    }
                )
            )
        elif result.error:
            print(f"{result.image}\tERROR\t{result.error}")
        else:
            print(f"{result.image}\t{result.caption}\t{result.score:.3f}")
        failures += result.error is not None
    return 1 if failures else 0
