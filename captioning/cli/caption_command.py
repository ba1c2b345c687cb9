"""``captioning caption``: the Beam caption job over an image archive.

The flags are the pipeline's own (``pipelines.options.CaptionOptions``) plus any
Beam runner option (``--runner``, ``--project``, ``--region``,
``--direct_num_workers``...), which pass through untouched. Beam is imported only
when this command runs; the library itself never imports it.
"""

from __future__ import annotations

import argparse
import json
import sys

from captioning.errors import EXIT_ERROR_RATE

HELP = """\
Caption every image matched by --input globs and/or listed in --input-manifest.
DIR (--output) holds two Delta Lake tables and the run summary:
  DIR/captions/     one row per captioned image
  DIR/errors/       one row per input that could not be captioned
  DIR/summary.json  counts, error rate, table versions, throughput
Workers write Parquet files; one commit at the end makes them visible. A run that fails
or is killed leaves the tables as they were.

required:
  --input GLOB            local, file:// or gs:// glob ('**' recurses), an http(s):// URL,
                          or WebDataset shards 'shards-{000..099}.tar' (repeatable), and/or
  --input-manifest FILE   text (one URI per line), CSV, TSV, JSON Lines or Parquet; .gz too
  --output DIR            output folder (local or gs://)
  --model BUNDLE          model bundle directory (local or gs://)

inputs:
  --uri-column NAME       the manifest's column or JSON key of URIs (default image_uri)
  --max-image-bytes N     an input over N bytes is an error row (default 128 MiB)
  --read-timeout S        seconds per read or URL fetch before it is an error (default 60)
  --http-concurrency N    URL fetches in flight per worker thread (default 64); 429 and
                          5xx are retried with backoff, at most 5 redirects are followed
  --user-agent TEXT       the User-Agent of URL fetches
  --ignore-robots-tag     fetch images whose server says X-Robots-Tag: noai / noimageai
                          (by default they are error rows, as img2dataset does)
  Formats: JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF. Every input that names no
  readable image (bad manifest line, folder, FIFO, over the limits, HTTP failure, s3://)
  is one row in DIR/errors; the run goes on.

options:
  --skip-existing         only caption URIs not already in DIR/captions, and append them
                          (without it the run replaces the captions)
  --expect-model-id ID    refuse the bundle unless its content hash is ID (nightly runs)
  --max-error-rate R      exit 3 when more than R of the listed inputs fail (default 0.05);
                          errors are still committed; a full rerun then keeps the earlier
                          captions
  --allow-empty           let a run whose inputs list nothing, or that captions nothing,
                          replace the earlier captions (otherwise it is refused)
  --retention-hours H     earlier table versions stay readable for H hours (default 168)
  --gpu                   GPU workers: shared model per GPU, auto precision, batches of 128.
                          With --runner DataflowRunner it also fills in what you did not give:
                            --experiments use_runner_v2
                            --dataflow_service_options
                              "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
                            --machine_type g2-standard-8   --disk_size_gb 50
                          and needs --sdk_container_image IMAGE (deploy/dataflow/Dockerfile)
  --beam-width K          beams per image (1 = greedy; default: the bundle's)
  --min-batch-size N      (default 8)   --max-batch-size N (default 64; 128 with --gpu)
  --precision P           auto | float32 | mixed_bfloat16 | mixed_float16
                          (default: the bundle's, normally auto = bf16 where supported)
  --decode-timeout S      seconds per image decode before it becomes an error (default 30)
  --no-decode-isolation   decode in the worker process instead of a guarded subprocess
  --dry_run [--job-spec-out FILE]
                          build the pipeline but run nothing; print the job description (or
                          write it to FILE). With DataflowRunner it is the Dataflow job Beam
                          would submit (worker pool, container image, service options,
                          experiments, the pipeline proto and its steps), made with no
                          credentials and no network, nothing staged; it needs --project,
                          --region and a gs:// --temp_location, as a real launch does. gs://
                          inputs, manifest and output are not looked at (--skip-existing
                          shows the join a nightly run has); the bundle's settings are read,
                          so a local --model keeps it offline.

Yes/no flags also take a value (--gpu=true, --skip_existing=false, --dry_run=false), the
way a Dataflow flex template passes them.

Beam options pass through, e.g. --runner DirectRunner (default) --direct_num_workers 2
--direct_running_mode multi_processing, or --runner DataflowRunner --project P --region R
--temp_location gs://... --sdk_container_image IMAGE --max_num_workers N. A flag that
is neither the job's nor Beam's is an error (exit status 2), not ignored.

Exit status: 0 done; 2 a mistake or a refused run (nothing committed); 3 committed, but
the error rate was above --max-error-rate; 4 another run committed a conflicting change
to the tables at the same time (nothing committed; rerun).
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption an image archive with the Beam pipeline (Parquet out)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="captioning caption --input GLOB | --input-manifest FILE --output DIR "
        "--model BUNDLE [options] [Beam options]",
    )
    parser.set_defaults(run=run, passthrough=True)


def run(args: argparse.Namespace) -> int:
    from pipelines.caption_pipeline import run as run_pipeline

    summary = run_pipeline(args.beam_args)
    json.dump(summary, sys.stdout, indent=2, default=str)
    print()
    if summary.get("alert"):  # committed, but a scheduler should raise an alert
        print(f"captioning caption: alert: {summary['alert']}", file=sys.stderr)
        return EXIT_ERROR_RATE
    return 0
