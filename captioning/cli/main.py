"""Entry point of the ``captioning`` console script.

User mistakes and refused runs (``UserError``) are printed as one line and exit with
status 2; a commit that conflicted with a concurrent run exits with 4; a multi-worker run
that lost a peer exits with 75 (EX_TEMPFAIL) so the platform restarts it; anything else is
a bug and keeps its traceback. (Status 3, error rate too high, is the caption command's.)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from captioning.cli import (
    caption_command,
    evaluate_command,
    explain_command,
    features_command,
    predict_command,
    report_command,
    synth_command,
    train_command,
)
from captioning.errors import (
    EXIT_CONFLICT,
    EXIT_ERROR_RATE,
    EXIT_RESTART,
    EXIT_USAGE,
    CommitConflictError,
    ErrorRateAlert,
    UserError,
    WorkerLostError,
)

COMMANDS = (
    synth_command,
    train_command,
    features_command,
    caption_command,
    predict_command,
    evaluate_command,
    explain_command,
    report_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioning",
        description="Caption large image archives: train an InceptionV3 + attention-GRU "
        "captioner, then caption images in batch.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter hides the lines a user needs to read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    # `caption` hands every flag it does not know to Beam (runner, project, ...).
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.beam_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Beam's INFO lines are about its own machinery; its warnings still show.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"captioning {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ErrorRateAlert as error:
        print(f"captioning {args.command}: alert: {error}", file=sys.stderr)
        return EXIT_ERROR_RATE
    except CommitConflictError as error:
        print(f"captioning {args.command}: error: {error}", file=sys.stderr)
        return EXIT_CONFLICT
    except WorkerLostError as error:
        print(f"captioning {args.command}: {error}", file=sys.stderr)
        return EXIT_RESTART
    except KeyboardInterrupt:
        print(f"captioning {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
