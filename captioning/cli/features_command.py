"""``captioning features``: frozen-backbone features of a captioned dataset, by a Beam job.

The flags are the pipeline's own (``pipelines.options.FeatureOptions``) plus any Beam
runner option; this command only hands them on, as ``caption`` does.

``captioning train --features DIR`` then trains from the shards instead of
running the backbone itself, so preprocessing a large training set is spread
over Beam workers. Beam is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys

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

required:
  --captions FILE         COCO/Karpathy JSON, Flickr8k token file, or CSV (image,caption)
  --images DIR            directory holding the images (local or gs://)
  --output DIR            folder for the features (local or gs://); a rerun replaces them
                          when it commits

options (each also spelt with underscores, --image_size):
  --format F              coco | karpathy | flickr8k | csv (inferred when omitted)
  --preset P              production (default) | demo | tiny
  --image-size PX         square input size (>= 75)
  --backbone-weights W    imagenet | none | PATH of a local InceptionV3 weights file
  --precision P           auto | float32 | mixed_bfloat16 | mixed_float16 (default: the
                          preset's training precision)
  --min-batch-size N      (default 8)   --max-batch-size N (default 64)
  --decode-timeout S      seconds per image decode before it becomes an error (default 30)
  --retention-hours H     files of runs that never committed, and earlier versions of the
                          errors table, are kept H hours (default 168); 0 removes them when
                          the run commits, for when no other features run writes to DIR
  --no-decode-isolation   decode in the worker process instead of a guarded subprocess

Use the same --preset, --image-size and --backbone-weights you will train with.
Beam options pass through, e.g. --runner DirectRunner --direct_num_workers 2
--direct_running_mode multi_processing, or --runner DataflowRunner --project P --region R
--temp_location gs://... --sdk_container_image IMAGE.
"""


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
    parser.set_defaults(run=run, passthrough=True)


def run(args: argparse.Namespace) -> int:
    from pipelines.feature_pipeline import run as run_features

    summary = run_features(args.beam_args)
    json.dump(summary, sys.stdout, indent=2, default=str)
    print()
    return 0
