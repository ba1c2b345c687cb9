"""``captioning features``: frozen-backbone features of a captioned dataset, by a Beam job.

``captioning train --features DIR`` then trains from the shards instead of
running the backbone itself, so preprocessing a large training set is spread
over Beam workers. Flags the command does not know pass through to Beam
(``--runner``, ``--project``, ``--direct_num_workers``...), as for ``caption``.
Beam is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from captioning import precision
from captioning.cli.model_flags import add_model_flags

# captioning.tables' default, without importing deltalake to build the parser.
DEFAULT_RETENTION_HOURS = 168

HELP = """\
Compute the frozen InceptionV3 features of every image in a captions file (all splits)
with a Beam pipeline, for `captioning train --features DIR`. Writes into the folder DIR:
features.json (what made the features, and which run's files they are),
backbone-<run>.weights.h5 (the backbone that made them; the trainer puts it into the
bundle), shards/features-<run>-*.tfrecord, shards/index-<run>-*.txt, and errors/, a Delta
table with one row per image without features (the caption job's errors schema).

A run commits at its end by writing features.json; until then readers see the previous
run, whole, and a killed run changes nothing they read. After its commit a run deletes
the previous run's files, and files of runs that never committed once they are older
than --retention-hours.

Use the same --preset, --image-size and --backbone-weights you will train with.
Beam options pass through, e.g. --runner DirectRunner --direct_num_workers 2
--direct_running_mode multi_processing, or --runner DataflowRunner --project P --region R
--temp_location gs://... --sdk_container_image IMAGE.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's own flags (shared with ``python -m pipelines.feature_pipeline``)."""
    parser.add_argument(
        "--captions",
        required=True,
        help="captions file (COCO/Karpathy JSON, Flickr8k token file, or CSV with image,caption)",
    )
    parser.add_argument(
        "--images", required=True, help="directory holding the images (local or gs://)"
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder for the features (local or gs://); a rerun replaces them when it commits",
    )
    add_model_flags(parser)
    parser.add_argument(
        "--precision",
        choices=precision.CHOICES,
        help="dtype policy of the backbone (default: the preset's training precision; "
        "auto = bf16 where the launching machine has it)",
    )
    parser.add_argument("--min-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=30.0,
        help="seconds one image may take to decode before it is an error",
    )
    parser.add_argument(
        "--retention-hours",
        type=int,
        default=DEFAULT_RETENTION_HOURS,
        metavar="H",
        help="files of runs that never committed, and earlier versions of the errors "
        f"table, are kept H hours (default {DEFAULT_RETENTION_HOURS}); 0 removes them "
        "when the run commits, for when no other features run writes to DIR",
    )
    parser.add_argument(
        "--no-decode-isolation",
        dest="decode_isolation",
        action="store_false",
        help="decode in the worker process itself instead of a guarded subprocess",
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "features",
        help="compute frozen-backbone training features with a Beam pipeline",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # A Beam flag must never be taken for an abbreviation of ours.
        allow_abbrev=False,
        usage="captioning features --captions FILE --images DIR --output DIR [options] "
        "[Beam options]",
    )
    add_arguments(parser)
    parser.set_defaults(run=run, passthrough=True)


def run(args: argparse.Namespace) -> int:
    # The pipeline module first: every options class the job reads is then defined.
    from pipelines.feature_pipeline import run_features
    from pipelines.options import CaptionOptions
    from pipelines.unknown_flags import check_beam_flags

    # Our own flags were parsed out already; they only feed "did you mean". The caption
    # job's options mean nothing here, so e.g. --skip-existing is an error, not ignored.
    own = argparse.ArgumentParser(add_help=False)
    add_arguments(own)
    check_beam_flags(args.beam_args, own_flags=own._option_string_actions, exclude=[CaptionOptions])
    summary = run_features(args, args.beam_args)
    json.dump(summary, sys.stdout, indent=2, default=str)
    print()
    return 0
