"""Model classes: tiny configs, shapes, get_config round trips, generation, precision."""

import keras
import numpy as np
import pytest

from captioning.config import CaptionerConfig
from captioning.models.attention_gru_decoder import AttentionGRUDecoder
from captioning.models.bahdanau_attention import BahdanauAttention
from captioning.models.captioner import Captioner
from captioning.models.image_encoder import ImageEncoder
from captioning.models.image_normalization import ImageNormalization
from captioning.precision import dtype_policy
from captioning.presets import tiny

VOCAB, MAX_LEN = 20, 8


def tiny_captioner(config: CaptionerConfig | None = None) -> Captioner:
    config = config or tiny().captioner
    return Captioner.from_captioner_config(config, VOCAB, MAX_LEN, start_id=1, end_id=2)


def _images(count=3, size=75):
    return np.random.default_rng(0).integers(0, 255, (count, size, size, 3), dtype=np.uint8)


def test_teacher_forced_logits_shape():
    model = tiny_captioner()
    tokens = np.ones((3, MAX_LEN - 1), np.int32)
    logits = model({"images": _images(), "tokens": tokens})
    assert logits.shape == (3, MAX_LEN - 1, VOCAB)
    assert logits.dtype.name == "float32"


def test_generate_returns_captions_scores_and_attention():
    model = tiny_captioner()
    result = model.generate(_images(), beam_width=2)
    grid = model.encoder.grid_size
    assert result.tokens.shape == (3, 2, MAX_LEN - 1)
    assert result.scores.shape == (3, 2)
    assert result.attention.shape == (3, 2, MAX_LEN - 1, grid)
    steps = int(result.lengths[0, 0])
    np.testing.assert_allclose(np.asarray(result.attention[0, 0, :steps]).sum(-1), 1.0, rtol=1e-4)
    greedy = model.generate(_images(), beam_width=1)
    assert greedy.tokens.shape == (3, 1, MAX_LEN - 1)


def test_generate_from_cached_features_matches_images():
    model = tiny_captioner()
    images = _images()
    features = model.encoder.backbone_features(images)
    from_images = model.generate(images, beam_width=2)
    from_features = model.generate(features=np.asarray(features), beam_width=2)
    np.testing.assert_array_equal(from_images.tokens, from_features.tokens)


@pytest.mark.parametrize(
    "layer",
    [
        ImageNormalization("dataset", mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0]),
        BahdanauAttention(8),
        AttentionGRUDecoder(VOCAB, embedding_dim=8, units=8, attention_units=8, dropout=0.1),
        ImageEncoder(
            image_size=75, feature_layer="mixed0", projection_dim=8, backbone_weights=None
        ),
    ],
)
def test_layers_round_trip_their_config(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def test_captioner_config_round_trip():
    model = tiny_captioner()
    clone = Captioner.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_normalization_matches_keras_preprocess_input():
    images = _images(2)
    ours = ImageNormalization("inception")(images)
    theirs = keras.applications.inception_v3.preprocess_input(images.astype("float32"))
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_mixed_bfloat16_builds_and_generates():
    with dtype_policy("mixed_bfloat16"):
        model = tiny_captioner()
    assert model.encoder.backbone.layers[2].compute_dtype == "bfloat16"
    tokens = np.ones((2, MAX_LEN - 1), np.int32)
    assert model({"images": _images(2), "tokens": tokens}).dtype.name == "float32"
    result = model.generate(_images(), beam_width=2)
    assert np.isfinite(np.asarray(result.scores)).all()
    assert keras.config.dtype_policy().name == "float32"  # the policy did not leak


def test_xla_compiled_search_matches_the_graph_one():
    """The jit_compile path (used on GPUs) gives the same captions on CPU."""
    model = tiny_captioner()
    images = _images(4)
    for width in (1, 3):
        plain = model.generate(images, beam_width=width)
        compiled = model.generate(images, beam_width=width, jit_compile=True)
        np.testing.assert_array_equal(plain.tokens, compiled.tokens)
        np.testing.assert_allclose(plain.scores, compiled.scores, rtol=1e-4, atol=1e-5)
