"""The attention figure: the image once on its own, then once per word with that word's
attention map laid over it, and the whole caption as the title.

Built on a bare matplotlib ``Figure`` (no pyplot, so no display and no global state);
``Figure.savefig`` renders it with the Agg backend.
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from captioning.explain.word_attention import WordAttention

PANEL_INCHES = 2.2
MAX_COLUMNS = 5
HEAT_ALPHA = 0.55


def panel_count(explained: WordAttention) -> int:
    """Panels in the figure: the plain image plus one per word."""
    return len(explained.words) + 1


def attention_figure(
    explained: WordAttention, columns: int = MAX_COLUMNS, dpi: int = 100
) -> Figure:
    """A figure of ``panel_count(explained)`` axes: the image, then one panel per word
    titled with the word, its attention grid stretched over the image (bilinear)."""
    panels = panel_count(explained)
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    figure = Figure(
        figsize=(columns * PANEL_INCHES, rows * PANEL_INCHES + 0.5), dpi=dpi, layout="constrained"
    )
    height, width = explained.image.shape[:2]
    # extent maps the coarse grid onto the picture's own pixel coordinates, so a 5x5
    # map covers the full image whatever its size or aspect ratio.
    extent = (0, width, height, 0)
    axes = figure.add_subplot(rows, columns, 1)
    axes.imshow(explained.image, extent=extent)
    axes.set_title("image", fontsize=10)
    axes.set_axis_off()
    for index, (word, grid) in enumerate(zip(explained.words, explained.maps, strict=True)):
        axes = figure.add_subplot(rows, columns, index + 2)
        axes.imshow(explained.image, extent=extent)
        # Each map from 0 to its own peak: weights sum to 1 over the grid, so on a
        # fixed 0..1 scale every map of a 64-cell grid would look nearly black.
        axes.imshow(
            grid,
            cmap="inferno",
            alpha=HEAT_ALPHA,
            extent=extent,
            interpolation="bilinear",
            vmin=0.0,
            vmax=float(grid.max()) or 1.0,
        )
        axes.set_title(word, fontsize=11)
        axes.set_axis_off()
    caption = explained.caption or "(empty caption)"
    figure.suptitle(f"{caption}  (score {explained.score:.2f})", fontsize=12)
    return figure
