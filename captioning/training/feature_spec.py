"""The contract between ``captioning features`` and ``captioning train --features``.

A features run under PREFIX (local or gs://) leaves:

    PREFIX_features.json                               FeatureSpec: what made the features
    PREFIX_backbone.weights.h5                         the backbone weights that made them
    PREFIX_features-<run>-SSSSS-of-NNNNN.tfrecord      one tf.train.Example per image
    PREFIX_index-<run>-SSSSS-of-NNNNN.txt              the names of the images that have one
    PREFIX_errors-<run>-SSSSS-of-NNNNN.parquet         one row per image that has none

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

from captioning.config import CaptionerConfig, ImageConfig
from captioning.errors import UserError
from captioning.models.image_encoder import ImageEncoder
from captioning.training.example_cache import weights_identity

FORMAT_VERSION = 1
FEATURE_DTYPE = "float16"  # what the trainer's own feature cache stores, too
IMAGE_KEY = "image"
FEATURES_KEY = "features"


def spec_path(prefix: str) -> str:
    return f"{prefix}_features.json"


def backbone_path(prefix: str) -> str:
    return f"{prefix}_backbone.weights.h5"


def shards_prefix(prefix: str, run_id: str) -> str:
    return f"{prefix}_features-{run_id}"


def index_prefix(prefix: str, run_id: str) -> str:
    return f"{prefix}_index-{run_id}"


def errors_glob(prefix: str, run_id: str) -> str:
    # The caption job's errors table naming (pipelines.write_outputs), same schema.
    return f"{prefix}_errors-{run_id}-*.parquet"


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
    # sha256 of PREFIX_backbone.weights.h5, checked before the trainer loads it.
    backbone_sha256: str
    precision: str
    feature_shape: tuple[int, int]  # (grid cells, channels)
    feature_dtype: str = FEATURE_DTYPE
    complete: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
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


def read_spec(prefix: str) -> FeatureSpec:
    path = spec_path(prefix)
    if not tf.io.gfile.exists(path):
        raise UserError(f"--features {prefix}: no {path}; run `captioning features` first")
    try:
        spec = FeatureSpec.from_json(tf.io.gfile.GFile(path).read())
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"--features {prefix}: {path} is not a feature spec ({error})") from None
    if not spec.complete:
        raise UserError(
            f"--features {prefix}: run {spec.run_id} did not finish; rerun `captioning features`"
        )
    return spec


def build_feature_encoder(config: CaptionerConfig, load_backbone_weights: bool) -> ImageEncoder:
    """The encoder the trainer builds for ``config`` (Captioner.from_captioner_config);
    its ``backbone_features`` is what gets stored. Build it under the dtype policy."""
    image, encoder = config.image, config.encoder
    return ImageEncoder(
        image_size=image.image_size,
        feature_layer=encoder.feature_layer,
        projection_dim=encoder.projection_dim,
        backbone_weights=encoder.backbone_weights,
        trainable_backbone=False,
        normalization=image.normalization,
        mean=image.mean,
        std=image.std,
        load_backbone_weights=load_backbone_weights,
        name="encoder",
    )


def image_name(images: str, uri: str) -> str:
    """The name (as in the captions file) of an image URI made by joining it to ``images``."""
    root = images.rstrip("/") + "/"
    if not uri.startswith(root):
        raise ValueError(f"{uri} is not under {root}")
    return uri[len(root) :]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def feature_record(name: str, features: np.ndarray) -> bytes:
    """One image's tf.train.Example: its name and its float16 feature grid as raw bytes."""
    values = np.ascontiguousarray(features, dtype=FEATURE_DTYPE)
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        FEATURES_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[values.tobytes()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
