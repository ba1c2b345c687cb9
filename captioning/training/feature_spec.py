"""The contract between ``captioning features`` and ``captioning train --features``.

A features run writes under ``--output DIR`` (local or gs://) in the layout of
``captioning.run_layout``: per run a backbone file and TFRecord shards with their index,
and rows in the errors table. ``DIR/features.json`` is this module's ``FeatureSpec`` of
the one committed run; writing it is that run's commit. It names everything a reader
needs (the run, its shard and index files, the errors table version), so readers never
glob for files: a run that is running, or was killed, is invisible to them.

The trainer loads the saved backbone into its model, so the bundle it exports
holds the very backbone that computed its training features. With a random
init (``backbone_weights=None``) that is the only way the two can agree; with
ImageNet weights it also spares the training machine the download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from captioning import run_layout, storage
from captioning.config import CaptionerConfig, ImageConfig
from captioning.errors import UserError
from captioning.models.image_encoder import FEATURE_DTYPE, ImageEncoder
from captioning.training.example_cache import weights_identity

# 2: the spec is the commit of a run under --output DIR and names its files.
FORMAT_VERSION = 2
IMAGE_KEY = "image"
FEATURES_KEY = "features"


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines the stored numbers, plus where they came from."""

    run_id: str
    captions: str
    captions_format: str | None
    images: str
    image: ImageConfig
    feature_layer: str
    # As given ("imagenet", None, or a weights file) and that source's identity.
    backbone_weights: str | None
    backbone_source: str
    # sha256 of DIR/backbone-<run_id>.weights.h5, checked before the trainer loads it.
    backbone_sha256: str
    precision: str
    feature_shape: tuple[int, int]  # (grid cells, channels)
    feature_dtype: str = FEATURE_DTYPE
    complete: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
    # The committed run's files, relative to DIR (so DIR can be copied or moved), and
    # the errors table version its errors commit made: readers take exactly these.
    shards: tuple[str, ...] = ()
    index: tuple[str, ...] = ()
    errors_version: int | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown feature spec format {data.get('format_version')!r}")
        image = data.pop("image")
        for key in ("mean", "std"):
            if image.get(key) is not None:
                image[key] = tuple(image[key])
        data["feature_shape"] = tuple(data["feature_shape"])
        for key in ("shards", "index"):
            data[key] = tuple(data.get(key, ()))
        return cls(image=ImageConfig(**image), **data)

    def apply_to(self, config: CaptionerConfig) -> CaptionerConfig:
        """``config`` with the image and backbone settings these features were made with."""
        encoder = dataclasses.replace(
            config.encoder,
            feature_layer=self.feature_layer,
            backbone_weights=self.backbone_weights,
        )
        return dataclasses.replace(config, image=self.image, encoder=encoder)

    def contradictions(
        self,
        image_size: int | None = None,
        normalization: str | None = None,
        backbone_weights: str | None = None,
    ) -> list[str]:
        """The user's explicit settings that disagree with these features (None = not given;
        ``backbone_weights`` is "imagenet", "none" or a file path)."""
        found = []
        if image_size is not None and image_size != self.image.image_size:
            found.append(f"--image-size {image_size} (features: {self.image.image_size})")
        if normalization is not None and normalization != self.image.normalization:
            found.append(f"--normalization {normalization} (features: {self.image.normalization})")
        if backbone_weights is not None:
            weights = None if backbone_weights.lower() == "none" else backbone_weights
            if weights_identity(weights) != self.backbone_source:
                found.append(
                    f"--backbone-weights {backbone_weights} "
                    f"(features: {self.backbone_weights or 'none'})"
                )
        return found


def read_spec(features: str) -> FeatureSpec:
    """The committed spec of ``DIR`` (``--features DIR``); a one-line ``UserError`` when
    there is none, or it is not a finished run's."""
    path = run_layout.feature_spec_path(features)
    if not storage.exists(path):
        raise UserError(
            f"--features {features}: no {path} (no features run has committed there); "
            f"run `captioning features --output {features}` first"
        )
    try:
        text = storage.read_bytes(path).decode()
        spec = FeatureSpec.from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # not a spec's JSON
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"--features {features}: {path} is not a feature spec ({first_line}); "
            "rerun `captioning features`"
        ) from None
    if not spec.complete:
        raise UserError(
            f"--features {features}: run {spec.run_id} did not finish; rerun `captioning features`"
        )
    return spec


def build_feature_encoder(config: CaptionerConfig, load_backbone_weights: bool) -> ImageEncoder:
    """The encoder the trainer builds for ``config``, with its backbone frozen; its
    ``backbone_features``, cast to ``FEATURE_DTYPE``, is what gets stored. Build it
    under the dtype policy."""
    return ImageEncoder.from_captioner_config(
        config, load_backbone_weights=load_backbone_weights, trainable_backbone=False
    )


def image_name(images: str, uri: str) -> str:
    """The name (as in the captions file) of an image URI made by joining it to ``images``."""
    root = images.rstrip("/") + "/"
    if not uri.startswith(root):
        raise ValueError(f"{uri} is not under {root}")
    return uri[len(root) :]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with storage.open_binary(path) as handle:
        while block := handle.read(storage.BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def feature_record(name: str, features: np.ndarray) -> bytes:
    """One image's tf.train.Example: its name and its feature grid, as raw
    ``FEATURE_DTYPE`` bytes."""
    values = np.ascontiguousarray(features, dtype=FEATURE_DTYPE)
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        FEATURES_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[values.tobytes()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
