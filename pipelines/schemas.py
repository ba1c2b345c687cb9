"""The explicit pyarrow schemas of the captions and errors tables (see DESIGN.md)."""

from __future__ import annotations

import pyarrow as pa

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
        pa.field("stage", pa.string(), nullable=False),  # read | decode | inference
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("failed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

STAGES = ("read", "decode", "inference")
