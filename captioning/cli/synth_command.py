"""``captioning synth``: write synthetic captioned scenes."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("captioning.synth")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write synthetic captioned scenes (the offline stand-in for COCO)",
        description="Write DIR/images/*.png and DIR/captions.csv (image,caption): scenes of "
        "1-3 coloured shapes whose captions name the objects and their spatial relation.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--count", type=int, default=1000, help="number of scenes (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same scenes)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioning.data.synthetic_scenes import generate_scenes
    from captioning.errors import UserError

    if args.count < 1:
        raise UserError("--count must be at least 1")
    if args.size < 32:
        raise UserError("--size must be at least 32 pixels")
    path = generate_scenes(args.out, args.count, args.seed, args.size)
    log.info("wrote %d scenes to %s (captions in %s)", args.count, args.out, path)
    return 0
