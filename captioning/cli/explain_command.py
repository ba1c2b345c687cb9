"""``captioning explain``: caption one image and draw where each word looked (a PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from captioning import precision


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="caption one image and save its attention maps, one per word, as a PNG",
        description="Caption IMAGE and write a figure: the image, then one panel per "
        "generated word with the decoder's attention over the encoder grid laid over "
        "the image, the caption as the title. Prints the caption on stdout.",
    )
    parser.add_argument("image", metavar="IMAGE", help="image file")
    parser.add_argument("--model", required=True, help="model bundle directory")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    parser.add_argument("--beam-width", type=int, help="beams (1 = greedy; default: bundle's)")
    parser.add_argument(
        "--precision",
        choices=precision.CHOICES,
        help="dtype policy (default: the bundle's own, normally auto)",
    )
    parser.add_argument("--columns", type=int, default=5, help="panels per row (default 5)")
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioning.bundle import load_bundle
    from captioning.errors import UserError
    from captioning.explain.attention_figure import attention_figure
    from captioning.explain.word_attention import explain_image
    from captioning.images.decode import ImageDecodeError, open_image

    if args.beam_width is not None and args.beam_width < 1:
        raise UserError("--beam-width must be at least 1")
    if args.columns < 1 or args.dpi < 10:
        raise UserError("--columns must be at least 1 and --dpi at least 10")
    try:
        data = Path(args.image).read_bytes()
        # Check the image before the (slow) bundle load, so a typo fails at once.
        open_image(data, max_pixels=50_000_000)
    except OSError as error:
        raise UserError(f"cannot read {args.image}: {error.strerror or error}") from None
    except ImageDecodeError as error:
        raise UserError(f"cannot read {args.image}: {error}") from None
    bundle = load_bundle(args.model, precision=args.precision)
    try:
        explained = explain_image(bundle, data, beam_width=args.beam_width)
    except ImageDecodeError as error:  # e.g. over this bundle's own pixel limit
        raise UserError(f"cannot read {args.image}: {error}") from None
    figure = attention_figure(explained, columns=args.columns, dpi=args.dpi)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format="png", dpi=args.dpi)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    print(f"{explained.caption}\t{out}")
    return 0
