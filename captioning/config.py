"""Typed, frozen configuration for the captioner and its training job.

Configs are plain frozen dataclasses that round-trip through JSON (never pickle,
never ``exec``). ``CaptionerConfig`` travels inside every model bundle;
``TrainConfig`` is written beside every training run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# The InceptionV3 stem needs at least 75x75 pixels to leave a non-empty grid.
MIN_IMAGE_SIZE = 75


@dataclass(frozen=True)
class ImageConfig:
    """How raw image bytes become model input; shared by training and inference."""

    image_size: int = 299
    # "inception" is keras.applications.inception_v3.preprocess_input (x/127.5 - 1);
    # "dataset" uses per-channel mean/std measured over the training images.
    normalization: str = "inception"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Images whose header claims more pixels than this are refused before decoding.
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be at least {MIN_IMAGE_SIZE} for InceptionV3, "
                f"got {self.image_size}"
            )
        if self.normalization not in ("inception", "dataset"):
            raise ValueError(f"unknown normalization {self.normalization!r}")
        if self.normalization == "dataset" and (self.mean is None or self.std is None):
            raise ValueError("normalization='dataset' needs mean and std")


@dataclass(frozen=True)
class EncoderConfig:
    """InceptionV3 backbone cut at ``feature_layer``, then a Dense projection."""

    # "imagenet" (the production default), None (random init), or a local weights file.
    backbone_weights: str | None = "imagenet"
    trainable: bool = False
    feature_layer: str = "mixed10"
    projection_dim: int = 256


@dataclass(frozen=True)
class DecoderConfig:
    """Bahdanau attention over the feature grid, feeding a GRU language model."""

    embedding_dim: int = 256
    units: int = 512
    attention_units: int = 512
    dropout: float = 0.0


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults for caption generation; callers may override per request."""

    beam_width: int = 3
    # The dtype policy for captioning unless the caller picks one: "auto" is bf16 on
    # CPUs with AMX/AVX512-BF16 and on Ampere+ GPUs, fp16 on older GPUs, else float32.
    precision: str = "auto"
    # Beams are ranked by sum(log p) / length**length_penalty; 1.0 ranks by the
    # mean token log-probability, which is also the score written to Parquet.
    length_penalty: float = 1.0


@dataclass(frozen=True)
class CaptionerConfig:
    """Everything needed to rebuild the model architecture; stored in the bundle."""

    image: ImageConfig = field(default_factory=ImageConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied to an image together with its captions."""

    # Off by default: a mirrored image makes "to the left of" false. When on, the
    # words "left" and "right" are swapped in the captions of a flipped image.
    flip: bool = False
    # Random crop keeping at least this fraction of each side (1.0 disables).
    crop_fraction: float = 1.0
    # Maximum absolute brightness shift, in [0, 1] units of the pixel range.
    brightness: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """The training schedule and data settings; saved beside every run."""

    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 20
    batch_size: int = 64  # per replica; the global batch is this times the replica count
    learning_rate: float = 1e-3
    # Stop when validation loss has not improved for this many epochs (0 disables).
    early_stopping_patience: int = 3
    vocabulary_size: int = 5000
    max_caption_words: int = 30
    val_fraction: float = 0.2
    seed: int = 0
    # "float32", "mixed_bfloat16", "mixed_float16", or "auto" (bf16 where the device has it).
    precision: str = "float32"
    # Where epochs after the first read the cached examples (decoded pixels or backbone
    # features) from: "memory" (RAM), "disk" (stream the TFRecord shards every epoch, for
    # datasets larger than RAM), or "auto": RAM when they fit in a quarter of it.
    image_cache: str = "auto"
    steps_per_execution: int = 1


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def _build(cls: type, data: dict[str, Any]) -> Any:
    kwargs = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    for name, value in data.items():
        field_type = known[name].type
        nested = _NESTED.get(field_type) if isinstance(field_type, str) else None
        if nested is not None and isinstance(value, dict):
            value = _build(nested, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


_NESTED: dict[str, type] = {
    "ImageConfig": ImageConfig,
    "EncoderConfig": EncoderConfig,
    "DecoderConfig": DecoderConfig,
    "GenerationConfig": GenerationConfig,
    "CaptionerConfig": CaptionerConfig,
    "AugmentConfig": AugmentConfig,
}


def captioner_config_from_dict(data: dict[str, Any]) -> CaptionerConfig:
    return _build(CaptionerConfig, data)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data)
