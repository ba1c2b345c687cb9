"""Named training presets: the same code path at different sizes.

- ``production``: 299 px, ImageNet InceptionV3 (frozen, features cached), the
  full Show-Attend-Tell sized decoder. What a user with GPUs and internet runs.
- ``demo``: the offline settings. The backbone trains from scratch on the
  synthetic scenes at a reduced image size so that
  ``captioning train --preset demo`` fits in about 15 minutes on 2 CPU cores.
- ``tiny``: deliberately small widths for unit tests (seconds, not minutes).
"""

from __future__ import annotations

from captioning.config import (
    AugmentConfig,
    CaptionerConfig,
    DecoderConfig,
    EncoderConfig,
    GenerationConfig,
    ImageConfig,
    TrainConfig,
)


def production() -> TrainConfig:
    return TrainConfig()


def demo() -> TrainConfig:
    return TrainConfig(
        captioner=CaptionerConfig(
            image=ImageConfig(image_size=112),
            # mixed7 leaves a 5x5 grid at 112 px, enough for attention to see where
            # objects are; the later blocks would shrink it to 1x1.
            encoder=EncoderConfig(
                backbone_weights=None,
                trainable=True,
                feature_layer="mixed7",
                projection_dim=128,
            ),
            decoder=DecoderConfig(embedding_dim=64, units=256, attention_units=128),
            generation=GenerationConfig(beam_width=3),
        ),
        augment=AugmentConfig(flip=False, crop_fraction=0.94, brightness=0.1),
        epochs=14,
        batch_size=32,
        learning_rate=2e-3,
        early_stopping_patience=4,
        vocabulary_size=1000,
        max_caption_words=24,
    )


def tiny() -> TrainConfig:
    return TrainConfig(
        captioner=CaptionerConfig(
            image=ImageConfig(image_size=75),
            encoder=EncoderConfig(
                backbone_weights=None, trainable=True, feature_layer="mixed0", projection_dim=8
            ),
            decoder=DecoderConfig(embedding_dim=8, units=8, attention_units=8),
            generation=GenerationConfig(beam_width=2),
        ),
        epochs=2,
        batch_size=4,
        early_stopping_patience=0,
        vocabulary_size=40,
        max_caption_words=12,
    )


PRESETS = {"production": production, "demo": demo, "tiny": tiny}


def get_preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
