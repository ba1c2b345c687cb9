"""Pipeline options of the caption job; every other Beam/Dataflow option passes through."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class CaptionOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            action="append",
            default=[],
            help="glob of images, local or gs:// ('**' recurses); repeatable",
        )
        parser.add_argument(
            "--input-manifest",
            "--input_manifest",
            dest="input_manifest",
            help="file of image URIs: text (one per line), or CSV/Parquet with an image_uri column",
        )
        parser.add_argument(
            "--output",
            required=False,
            help="output prefix: captions go to PREFIX-*.parquet, errors to "
            "PREFIX_errors-*.parquet, the run summary to PREFIX_summary.json",
        )
        parser.add_argument("--model", help="model bundle directory (local or gs://)")
        parser.add_argument(
            "--skip-existing",
            "--skip_existing",
            dest="skip_existing",
            action="store_true",
            help="leave out URIs already in the captions under --output (incremental runs)",
        )
        parser.add_argument(
            "--gpu",
            action="store_true",
            help="GPU workers: one model per GPU shared by the SDK processes, auto precision, "
            "larger batches",
        )
        parser.add_argument(
            "--beam-width",
            "--beam_width",
            dest="beam_width",
            type=int,
            help="beams per image (1 = greedy; default: the bundle's)",
        )
        parser.add_argument(
            "--min-batch-size", "--min_batch_size", dest="min_batch_size", type=int, default=8
        )
        parser.add_argument(
            "--max-batch-size",
            "--max_batch_size",
            dest="max_batch_size",
            type=int,
            help="default 64 on CPU, 128 with --gpu",
        )
        parser.add_argument(
            "--precision",
            choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
            help="dtype policy for inference (default: the bundle's, normally auto: bf16 where "
            "the CPU or GPU has it)",
        )
        parser.add_argument(
            "--decode-timeout",
            "--decode_timeout",
            dest="decode_timeout",
            type=float,
            default=30.0,
            help="seconds one image may take to decode before it is an error",
        )
        parser.add_argument(
            "--no-decode-isolation",
            "--no_decode_isolation",
            dest="decode_isolation",
            action="store_false",
            help="decode in the worker process itself (faster to start; a decoder crash "
            "then takes the worker down)",
        )
        parser.add_argument(
            "--job-spec-out",
            "--job_spec_out",
            dest="job_spec_out",
            help="with --dry_run: write the resolved job spec (JSON) here instead of running",
        )
