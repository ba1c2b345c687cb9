"""Where a run's outputs live, and what their rows look like: the one home of the layout.

The caption job, the features job, the trainer and the reports all import this module
and never type a file name or pattern themselves. No Beam here.

A caption run's ``--output DIR``::

    DIR/captions/        Delta table: one row per captioned image (CAPTIONS_SCHEMA)
    DIR/errors/          Delta table: one row per input that could not be captioned
    DIR/summary.json     the last run's summary

A features run's ``--output DIR``::

    DIR/features.json                       FeatureSpec of the committed run (the commit)
    DIR/backbone-<run>.weights.h5           the backbone that computed that run's features
    DIR/shards/features-<run>-*.tfrecord    one tf.train.Example per image
    DIR/shards/index-<run>-*.txt            the names of the images that have one
    DIR/errors/                             Delta table, the caption job's errors schema

Every table is its own folder and every data file sits inside it, so no output's name
can match another output's files (``out/cap`` and ``out/cap-v2`` share nothing).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from captioning.errors import UserError
from captioning.storage import join
from captioning.storage.schemes import is_remote, local_path

CAPTIONS_TABLE = "captions"
ERRORS_TABLE = "errors"
SUMMARY_FILE = "summary.json"
FEATURE_SPEC_FILE = "features.json"
SHARDS_FOLDER = "shards"
# Beam writes each table's data files as DATA_FILE_PREFIX-<run>-SSSSS-of-NNNNN.parquet.
DATA_FILE_PREFIX = "part"

STAGES = ("read", "decode", "inference")

CAPTIONS_SCHEMA = pa.schema(
    [
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field(
            "alternatives",
            pa.list_(
                pa.struct([pa.field("caption", pa.string()), pa.field("score", pa.float32())])
            ),
        ),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("captioned_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),  # one of STAGES
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("failed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def output_folder(output: str, holds: str) -> str:
    """``--output`` as the jobs use it: a local folder made absolute (``file://`` too), a
    bucket folder as given. A local file there is a user mistake."""
    if is_remote(output):
        return output.rstrip("/")
    path = Path(local_path(output)).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {output} is a file; it names a folder that holds {holds}")
    return str(path)


# === Caption runs ===
def captions_table(output: str) -> str:
    return join(output, CAPTIONS_TABLE)


def errors_table(output: str) -> str:
    return join(output, ERRORS_TABLE)


def summary_path(output: str) -> str:
    return join(output, SUMMARY_FILE)


def data_file_prefix(table: str, run_id: str) -> str:
    """What Beam's writer is given: the run's data files land inside the table folder,
    invisible to readers until the run commits them."""
    return join(table, f"{DATA_FILE_PREFIX}-{run_id}")


def legacy_patterns(output: str) -> dict[str, str]:
    """The files of the layout before tables (``--output PREFIX``): ``PREFIX-*.parquet``
    captions, ``PREFIX_errors-*.parquet`` errors, ``PREFIX_summary.json``."""
    prefix = output.rstrip("/")
    return {
        "captions": f"{prefix}-*.parquet",
        "errors": f"{prefix}_errors-*.parquet",
        "summary": f"{prefix}_summary.json",
    }


# === Features runs ===
def feature_spec_path(output: str) -> str:
    return join(output, FEATURE_SPEC_FILE)


def backbone_path(output: str, run_id: str) -> str:
    return join(output, f"backbone-{run_id}.weights.h5")


def shards_prefix(output: str, run_id: str) -> str:
    return join(output, SHARDS_FOLDER, f"features-{run_id}")


def index_prefix(output: str, run_id: str) -> str:
    return join(output, SHARDS_FOLDER, f"index-{run_id}")


def shards_glob(output: str, run_id: str) -> str:
    return shards_prefix(output, run_id) + "-*.tfrecord"


def index_glob(output: str, run_id: str) -> str:
    return index_prefix(output, run_id) + "-*.txt"
