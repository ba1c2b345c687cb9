"""The InceptionV3 encoder: default ImageNet setting, local weights files, trainability."""

import numpy as np
import pytest

from captioning.config import EncoderConfig
from captioning.models.image_encoder import ImageEncoder, build_inception_backbone
from captioning.presets import production


def test_production_default_asks_for_imagenet_weights():
    """Checks the setting only: nothing here may download."""
    assert EncoderConfig().backbone_weights == "imagenet"
    assert production().captioner.encoder.backbone_weights == "imagenet"
    assert production().captioner.image.image_size == 299


def test_cli_default_backbone_is_imagenet():
    from captioning.cli.main import build_parser
    from captioning.cli.train_command import resolve_config

    args = build_parser().parse_args(["train", "--captions", "c", "--images", "i", "--out", "o"])
    assert resolve_config(args).captioner.encoder.backbone_weights == "imagenet"


def test_a_local_weights_file_is_loaded(tmp_path):
    """A full InceptionV3 "notop" weights file, loaded into a backbone cut at mixed0."""
    source = build_inception_backbone(75, "mixed10", weights=None)
    path = tmp_path / "inception_notop.weights.h5"
    source.save_weights(path)

    def encoder(weights):
        return ImageEncoder(
            image_size=75,
            feature_layer="mixed0",
            projection_dim=4,
            backbone_weights=weights,
            load_backbone_weights=True,
        )

    loaded, fresh = encoder(str(path)), encoder(None)
    differs = False
    for layer in loaded.backbone.layers:
        expected = source.get_layer(layer.name).get_weights()
        for got, want in zip(layer.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(
            fresh.backbone.get_layer(layer.name).get_weights(), expected, strict=True
        ):
            differs |= not np.array_equal(got, want)
    assert differs  # a random init differs, so the equality above came from the file


def test_cli_rejects_a_missing_weights_file():
    from captioning.cli.main import main

    code = main(
        [
            "train",
            "--captions",
            "c.csv",
            "--images",
            ".",
            "--out",
            "o",
            "--backbone-weights",
            "/no/such/file.h5",
        ]
    )
    assert code == 2


def test_frozen_backbone_has_no_trainable_weights_but_projection_does():
    encoder = ImageEncoder(
        image_size=75,
        feature_layer="mixed0",
        projection_dim=4,
        backbone_weights=None,
        trainable_backbone=False,
    )
    encoder.build()
    assert encoder.backbone.trainable_weights == []
    assert len(encoder.projection.trainable_weights) == 2


@pytest.mark.slow
def test_full_size_inception_v3_gives_an_8x8_grid():
    encoder = ImageEncoder(image_size=299, backbone_weights=None, projection_dim=16)
    features = encoder(np.zeros((1, 299, 299, 3), np.uint8))
    assert encoder.grid_size == 64 and encoder.backbone_channels == 2048
    assert features.shape == (1, 64, 16)
