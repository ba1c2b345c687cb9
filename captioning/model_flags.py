"""Flags the trainer and the features job share: the captions format, the preset, and the image
and backbone settings, with one place that applies them to a preset's captioner config.

Features must be computed with exactly the settings training uses, so both commands
read these flags the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from captioning.config import CaptionerConfig
from captioning.errors import UserError

PRESET_HELP = (
    "settings preset: production (299 px, ImageNet backbone, frozen), "
    "demo (offline, backbone from scratch, small images), tiny (tests)"
)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("coco", "karpathy", "flickr8k", "csv"),
        help="caption format (inferred from the file when omitted)",
    )
    parser.add_argument(
        "--preset", default="production", choices=("production", "demo", "tiny"), help=PRESET_HELP
    )
    # Both spellings, as every Beam job flag: a Dataflow flex template passes --name=value.
    parser.add_argument(
        "--image-size",
        "--image_size",
        dest="image_size",
        type=int,
        help="square input size in pixels (>= 75)",
    )
    parser.add_argument(
        "--backbone-weights",
        "--backbone_weights",
        dest="backbone_weights",
        help="imagenet | none | PATH of a local InceptionV3 weights file",
    )


def backbone_weights(value: str) -> str | None:
    """``--backbone-weights``: "imagenet", None for "none", or a local file's absolute path."""
    if value.lower() == "none":
        return None
    if value == "imagenet":
        return value
    if not Path(value).is_file():
        raise UserError(f"--backbone-weights file {value} does not exist")
    return str(Path(value).resolve())


def apply_model_flags(
    captioner: CaptionerConfig, image_size: int | None, weights: str | None
) -> CaptionerConfig:
    """``captioner`` with ``--image-size`` and ``--backbone-weights`` applied, if given."""
    if image_size is not None:
        if image_size < 75:
            raise UserError("--image-size must be at least 75 (InceptionV3's minimum)")
        captioner = dataclasses.replace(
            captioner, image=dataclasses.replace(captioner.image, image_size=image_size)
        )
    if weights is not None:
        encoder = dataclasses.replace(captioner.encoder, backbone_weights=backbone_weights(weights))
        captioner = dataclasses.replace(captioner, encoder=encoder)
    return captioner
