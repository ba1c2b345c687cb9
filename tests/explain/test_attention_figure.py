"""The attention figure: one panel for the image, then one per word, each map over the image."""

import numpy as np
import pytest
from PIL import Image

from captioning.explain.attention_figure import PANEL_INCHES, attention_figure, panel_count
from captioning.explain.word_attention import WordAttention


def _explained(words, grid=(5, 5), size=(60, 90)):
    rng = np.random.default_rng(0)
    maps = rng.random((len(words), *grid)).astype(np.float32)
    maps /= maps.sum(axis=(1, 2), keepdims=True)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    return WordAttention(image=image, words=list(words), maps=maps, score=-0.5)


def test_one_panel_per_word_plus_the_image_titled_with_the_words():
    explained = _explained(["a", "red", "circle", "above", "a", "blue", "square"])
    figure = attention_figure(explained)

    assert panel_count(explained) == len(explained.words) + 1 == len(figure.axes)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["image", *explained.words]
    assert figure.get_suptitle().startswith("a red circle above a blue square")
    for axes, grid in zip(figure.axes[1:], explained.maps, strict=True):
        picture, heat = axes.get_images()
        # The 5x5 grid is stretched over the whole (non-square) picture.
        assert picture.get_extent() == heat.get_extent() == [0, 90, 60, 0]
        np.testing.assert_array_equal(heat.get_array(), grid)
        assert heat.get_clim() == pytest.approx((0.0, grid.max()))
    # The first panel is the image alone.
    assert len(figure.axes[0].get_images()) == 1


def test_the_png_decodes_at_the_size_the_layout_asks_for(tmp_path):
    explained = _explained(["a", "small", "green", "star", "to", "the", "left"], grid=(8, 8))
    figure = attention_figure(explained, columns=3, dpi=50)
    out = tmp_path / "attention.png"
    figure.savefig(out, format="png", dpi=50)

    rows, columns = 3, 3  # 8 panels in rows of 3
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size == (
            round(columns * PANEL_INCHES * 50),
            round((rows * PANEL_INCHES + 0.5) * 50),
        )
        png.load()


def test_an_empty_caption_still_shows_the_image():
    explained = WordAttention(
        image=np.zeros((10, 10, 3), np.uint8), words=[], maps=np.zeros((0, 5, 5)), score=-1.0
    )
    figure = attention_figure(explained)
    assert len(figure.axes) == 1 and "(empty caption)" in figure.get_suptitle()
