"""One attention map per caption word, taken from the best beam of the search."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from captioning.bundle import load_bundle
from captioning.explain.word_attention import explain_image, grid_shape
from captioning.inference import caption_files
from captioning.models.caption_search import SearchResult
from captioning.text.vocabulary import Vocabulary


def _png(width, height, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class _ScriptedCaptioner:
    """Stands in for Captioner.generate: two beams with known tokens and attention."""

    def __init__(self, vocabulary: Vocabulary, grid=(2, 3)):
        self.encoder = SimpleNamespace(
            backbone=SimpleNamespace(output=SimpleNamespace(shape=(None, *grid, 16)))
        )
        red, star, end = (vocabulary.word_id(w) for w in ("red", "star", "<end>"))
        steps, cells = 5, grid[0] * grid[1]
        # Best beam: "red star <end>" then padding; step t attends only to cell t.
        best = [red, star, end, 0, 0]
        other = [star, star, star, star, star]
        attention = np.zeros((1, 2, steps, cells), np.float32)
        attention[0, 0, np.arange(steps), np.arange(steps)] = 1.0
        attention[0, 1] = 1.0 / cells
        self.result = SearchResult(
            tokens=tf.constant([[best, other]], tf.int32),
            scores=tf.constant([[-0.25, -3.0]]),
            lengths=tf.constant([[3, 5]], tf.int32),
            attention=tf.constant(attention),
        )
        self.seen_shape = None

    def generate(self, images, beam_width=None):
        self.seen_shape = images.shape
        return self.result


def test_words_and_maps_come_from_the_best_beam_without_the_end_step():
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "red", "star"], max_length=6)
    captioner = _ScriptedCaptioner(vocabulary)
    bundle = SimpleNamespace(
        captioner=captioner,
        vocabulary=vocabulary,
        config=SimpleNamespace(image=SimpleNamespace(image_size=16, max_pixels=10_000_000)),
    )
    explained = explain_image(bundle, _png(40, 30), display_size=None)

    assert captioner.seen_shape == (1, 16, 16, 3)  # the model gets its own square input
    assert explained.words == ["red", "star"] and explained.caption == "red star"
    assert explained.score == pytest.approx(-0.25)
    assert explained.maps.shape == (2, 2, 3)
    # Step t attended cell t, in row-major order over the grid.
    assert explained.maps[0, 0, 0] == 1.0 and explained.maps[1, 0, 1] == 1.0
    assert explained.maps.sum() == pytest.approx(2.0)
    assert explained.image.shape == (30, 40, 3)  # the original, for display
    assert tuple(explained.image[0, 0]) == (200, 30, 30)


def test_large_images_are_shrunk_for_display_only():
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "red", "star"], max_length=6)
    bundle = SimpleNamespace(
        captioner=_ScriptedCaptioner(vocabulary),
        vocabulary=vocabulary,
        config=SimpleNamespace(image=SimpleNamespace(image_size=16, max_pixels=10_000_000)),
    )
    explained = explain_image(bundle, _png(1000, 500), display_size=200)
    assert explained.image.shape == (100, 200, 3)


def test_a_trained_bundle_attends_once_per_word_of_its_caption(tiny_bundle, scenes):
    bundle = load_bundle(tiny_bundle)
    path = sorted((scenes / "images").iterdir())[0]
    explained = explain_image(bundle, path.read_bytes(), beam_width=2)
    (predicted,) = caption_files(bundle, [str(path)], beam_width=2)

    assert explained.caption == predicted.caption and explained.words
    rows, columns = grid_shape(bundle)
    assert rows * columns == bundle.captioner.encoder.grid_size
    assert explained.maps.shape == (len(explained.words), rows, columns)
    # Softmax weights over the grid: every map is a distribution.
    assert np.all(explained.maps >= 0)
    assert explained.maps.sum(axis=(1, 2)) == pytest.approx(np.ones(len(explained.words)), abs=1e-2)
