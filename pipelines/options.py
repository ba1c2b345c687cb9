"""Pipeline options of the caption job; every other Beam/Dataflow option passes through.

Yes/no options take an optional value (``--gpu``, ``--gpu=true``, ``--gpu=false``)
because a Dataflow flex template passes every parameter as ``--name=value``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from captioning import precision
from captioning.errors import EXIT_ERROR_RATE, UserError
from captioning.model_flags import add_model_flags
from captioning.tables import DEFAULT_RETENTION_HOURS

# A nightly run over a real archive loses a few files to corruption; far more than that
# means a broken mount, bucket permissions or model, and a person should look.
DEFAULT_MAX_ERROR_RATE = 0.05

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def parse_yes_no(text: str) -> bool:
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_yes_no(parser, *names: str, dest: str, help: str) -> None:
    parser.add_argument(
        *names, dest=dest, nargs="?", const=True, default=False, type=parse_yes_no, help=help
    )


def normalize_dry_run(argv: Sequence[str]) -> list[str]:
    """Beam's own ``--dry_run`` needs a value and takes any non-empty one as true
    ("--dry_run False" included). Here a bare ``--dry_run`` means true and
    ``--dry_run=false`` really means false; either way Beam gets ``--dry_run=True`` or
    nothing."""
    result: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg != "--dry_run" and not arg.startswith("--dry_run="):
            result.append(arg)
            continue
        if "=" in arg:
            value = arg.split("=", 1)[1]
        elif index < len(args) and not args[index].startswith("-"):
            value = args[index]
            index += 1
        else:
            value = "true"
        try:
            dry = parse_yes_no(value)
        except argparse.ArgumentTypeError as error:
            raise UserError(f"--dry_run: {error}") from None
        if dry:
            result.append("--dry_run=True")
    return result


class _OnlyOnce:
    """A parser's ``add_argument`` that skips a flag the parser has already. Beam parses
    the flags of every options class with one parser (``get_all_options``), where a
    flag declared twice is an error, and each class alone when viewed (``view_as``),
    where each needs it: so the flags both jobs share are declared by both, once."""

    def __init__(self, parser) -> None:
        self.parser = parser

    def add_argument(self, *names: str, **kwargs):
        if any(name in self.parser._option_string_actions for name in names):
            return None
        return self.parser.add_argument(*names, **kwargs)


def add_job_flags(parser) -> None:
    """Flags both Beam jobs (caption, features) take, with one meaning."""
    parser = _OnlyOnce(parser)
    parser.add_argument(
        "--output",
        required=False,
        help="output folder (local or gs://) in the layout of captioning.run_layout",
    )
    parser.add_argument(
        "--retention-hours",
        "--retention_hours",
        dest="retention_hours",
        type=int,
        default=DEFAULT_RETENTION_HOURS,
        help="earlier table versions stay readable this long, then are vacuumed; files "
        "of killed runs are removed after it too (default "
        f"{DEFAULT_RETENTION_HOURS}, a week; keep it longer than a run takes)",
    )
    parser.add_argument(
        "--min-batch-size", "--min_batch_size", dest="min_batch_size", type=int, default=8
    )
    parser.add_argument(
        "--max-batch-size",
        "--max_batch_size",
        dest="max_batch_size",
        type=int,
        help="default 64 on CPU, 128 with --gpu (features: 64)",
    )
    parser.add_argument(
        "--precision",
        choices=precision.CHOICES,
        help="dtype policy of the model (default: the bundle's for caption, the preset's "
        "training precision for features; auto = bf16 where the CPU or GPU has it)",
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


class CaptionOptions(PipelineOptions):
    """The caption job's flags (``captioning caption``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_job_flags(parser)
        parser.add_argument(
            "--input",
            action="append",
            default=[],
            help="glob of images, local, file:// or gs:// ('**' recurses), an http(s):// "
            "URL, or WebDataset shards ('shards-{000..099}.tar'); repeatable",
        )
        parser.add_argument(
            "--input-manifest",
            "--input_manifest",
            dest="input_manifest",
            help="file of image URIs: text (one per line), CSV, TSV, JSON Lines or Parquet "
            "with a --uri-column; text kinds may be gzipped (.gz)",
        )
        parser.add_argument(
            "--uri-column",
            "--uri_column",
            dest="uri_column",
            default="image_uri",
            help="the manifest's column (JSON key) that holds the URIs (default image_uri)",
        )
        parser.add_argument(
            "--max-image-bytes",
            "--max_image_bytes",
            dest="max_image_bytes",
            type=int,
            default=128 * 1024 * 1024,
            help="an input larger than this is an error row, not read (default 128 MiB)",
        )
        parser.add_argument(
            "--read-timeout",
            "--read_timeout",
            dest="read_timeout",
            type=float,
            default=60.0,
            help="seconds one read or URL fetch may take before it is an error (default 60)",
        )
        parser.add_argument(
            "--http-concurrency",
            "--http_concurrency",
            dest="http_concurrency",
            type=int,
            default=64,
            help="URL fetches in flight per worker thread (default 64)",
        )
        parser.add_argument(
            "--user-agent",
            # Beam has a --user_agent of its own; the flex template passes this one as
            # --http_user_agent.
            "--http-user-agent",
            "--http_user_agent",
            dest="http_user_agent",
            help="the User-Agent header of URL fetches (default: captioning's own)",
        )
        _add_yes_no(
            parser,
            "--ignore-robots-tag",
            "--ignore_robots_tag",
            dest="ignore_robots_tag",
            help="fetch images whose server sends X-Robots-Tag: noai or noimageai (by "
            "default they are error rows, as img2dataset does)",
        )
        parser.add_argument("--model", help="model bundle directory (local or gs://)")
        _add_yes_no(
            parser,
            "--skip-existing",
            "--skip_existing",
            dest="skip_existing",
            help="leave out URIs already in the captions under --output (incremental runs)",
        )
        _add_yes_no(
            parser,
            "--allow-empty",
            "--allow_empty",
            dest="allow_empty",
            help="let a run whose inputs list nothing, or that captions nothing, replace "
            "the earlier captions (otherwise it is refused)",
        )
        parser.add_argument(
            "--max-error-rate",
            "--max_error_rate",
            dest="max_error_rate",
            type=float,
            default=DEFAULT_MAX_ERROR_RATE,
            help="above this share of the listed inputs failing (already captioned ones "
            "count as listed) the run exits with status "
            f"{EXIT_ERROR_RATE} (default {DEFAULT_MAX_ERROR_RATE:g}); its errors are still "
            "committed, and a full rerun then keeps the earlier captions",
        )
        parser.add_argument(
            "--expect-model-id",
            "--expect_model_id",
            dest="expect_model_id",
            help="refuse the bundle unless its verified content hash is this model id",
        )
        _add_yes_no(
            parser,
            "--gpu",
            dest="gpu",
            help="GPU workers: one SDK process per worker holds the model and decodes JPEGs "
            "on the GPU, auto precision, larger batches; with DataflowRunner also the GPU "
            "worker settings of pipelines.dataflow_gpu (each only where not given)",
        )
        _add_yes_no(
            parser,
            "--right-fit",
            "--right_fit",
            dest="right_fit",
            help="with --gpu on DataflowRunner: put the GPU resource hint on the inference "
            "step only, so listing, reading, CPU decoding and writing run on CPU workers; "
            "JPEG bytes (or a 299 px JPEG re-encoded on the CPU workers) cross between them",
        )
        parser.add_argument(
            "--decode-device",
            "--decode_device",
            dest="decode_device",
            choices=("auto", "cpu", "gpu"),
            default="auto",
            help="where JPEGs are decoded: gpu = batches on the GPU with nvImageCodec (any "
            "other file, and any JPEG the GPU decoder refuses, goes to Pillow on the CPU); "
            "auto (default) = gpu where nvImageCodec and a GPU are there, else cpu",
        )
        parser.add_argument(
            "--decoders",
            dest="decoders",
            type=int,
            help="CPU decoder processes per worker (default: one per core)",
        )
        parser.add_argument(
            "--beam-width",
            "--beam_width",
            dest="beam_width",
            type=int,
            help="beams per image (1 = greedy; default: the bundle's)",
        )
        parser.add_argument(
            "--job-spec-out",
            "--job_spec_out",
            dest="job_spec_out",
            help="with --dry_run: write the job description (JSON) here instead of running; "
            "with DataflowRunner it is the Dataflow job Beam would submit, made offline",
        )


class FeatureOptions(PipelineOptions):
    """The features job's flags (``captioning features``): the captioned dataset and the
    model settings it must share with training (``captioning.model_flags``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_job_flags(parser)
        parser.add_argument(
            "--captions",
            help="captions file (COCO/Karpathy JSON, Flickr8k token file, or CSV with "
            "image,caption)",
        )
        parser.add_argument("--images", help="directory holding the images (local or gs://)")
        add_model_flags(parser)
