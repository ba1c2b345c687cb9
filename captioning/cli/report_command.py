"""``captioning report``: a static HTML report of a caption run (opens from disk, no server).

The run is named by its ``--output`` folder; ``captioning.reports.run_report`` reads it."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a static HTML report of a caption run",
        description="Write OUT/index.html: the run summary, a gallery of thumbnails with "
        "captions and scores (sortable, filterable; on large runs a sample of the lowest- "
        "and highest-scoring captions and a random one), errors by stage and type, and the "
        "error rows. It reads what the run committed to its tables (DIR/captions, "
        "DIR/errors), never the files of a run that did not commit, and DIR/summary.json. "
        "The page needs no server and no network.",
    )
    parser.add_argument(
        "--captions",
        required=True,
        metavar="DIR",
        help="the --output DIR of the caption run (its captions and errors tables and "
        "summary.json)",
    )
    parser.add_argument("--out", required=True, metavar="OUT", help="report directory")
    parser.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="report version N of the captions table (time travel, within the run's "
        "--retention-hours) with the errors its run committed; default: the latest",
    )
    parser.add_argument("--lowest", type=int, default=50, help="lowest-scoring captions shown")
    parser.add_argument("--highest", type=int, default=50, help="highest-scoring captions shown")
    parser.add_argument("--random", type=int, default=100, help="random captions shown")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument("--max-errors", type=int, default=1000, help="error rows listed")
    parser.add_argument(
        "--thumbnails",
        choices=("embed", "files"),
        default="embed",
        help="embed thumbnails in the HTML (default) or write them to DIR/thumbnails/",
    )
    parser.add_argument("--thumbnail-size", type=int, default=160, metavar="PX")
    parser.add_argument(
        "--evaluation",
        metavar="FILE.csv",
        help="per-image results of `captioning evaluate` (image, caption, references, cider): "
        "adds the worst images by CIDEr",
    )
    parser.add_argument(
        "--evaluation-images",
        metavar="DIR",
        help="folder that relative image names in --evaluation are under",
    )
    parser.add_argument("--worst", type=int, default=20, help="worst-CIDEr images listed")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioning.errors import UserError
    from captioning.reports.run_report import ReportOptions, build_report

    if args.thumbnail_size < 16:
        raise UserError("--thumbnail-size must be at least 16")
    options = ReportOptions(
        lowest=args.lowest,
        highest=args.highest,
        random=args.random,
        seed=args.seed,
        max_errors=args.max_errors,
        worst=args.worst,
        thumbnails=args.thumbnails,
        thumbnail_size=args.thumbnail_size,
        version=args.version,
    )
    path = build_report(
        args.captions,
        args.out,
        options,
        evaluation=args.evaluation,
        evaluation_images=args.evaluation_images,
    )
    print(path)
    return 0
