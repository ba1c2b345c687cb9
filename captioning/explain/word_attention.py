"""One caption and, for each of its words, the attention the decoder paid to the image grid.

The decoder attends over the encoder's feature grid (5x5 for the demo bundle at
112 px / mixed7, 8x8 at 299 px / mixed10) once per generated token. The search
already tracks those weights for every beam; this module picks the best beam's,
one grid per word of the caption (the step that emitted ``<end>`` is left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from captioning.bundle import LoadedBundle
from captioning.images.decode import open_image, resize


@dataclass(frozen=True)
class WordAttention:
    """A caption with one attention map per word.

    ``image`` is the oriented RGB original (uint8 [H, W, 3]), ``maps`` the attention
    weights as [words, grid_height, grid_width], each map summing to 1 over the grid.
    The model saw the image stretched to a square, so the grid spans the whole image.
    """

    image: np.ndarray
    words: list[str]
    maps: np.ndarray
    score: float

    @property
    def caption(self) -> str:
        return " ".join(self.words)


def grid_shape(bundle: LoadedBundle) -> tuple[int, int]:
    """(rows, columns) of the encoder's feature grid that attention weights index."""
    _, height, width, _ = bundle.captioner.encoder.backbone.output.shape
    return int(height), int(width)


def explain_image(
    bundle: LoadedBundle,
    data: bytes,
    beam_width: int | None = None,
    display_size: int | None = 512,
) -> WordAttention:
    """Caption one image (its file bytes) and keep the best caption's attention per word.

    Raises ``ImageDecodeError`` for bytes that are not a usable image. ``display_size``
    bounds the longer side of the returned image (None keeps the original), which keeps
    figures of large photos small; the model input is made from the full image.
    """
    image_config = bundle.config.image
    picture, _ = open_image(data, image_config.max_pixels)
    pixels = resize(picture, image_config.image_size)
    result = bundle.captioner.generate(pixels[None], beam_width=beam_width)
    vocabulary = bundle.vocabulary
    tokens = np.asarray(result.tokens)[0, 0]
    length = int(np.asarray(result.lengths)[0, 0])
    attention = np.asarray(result.attention)[0, 0]
    words: list[str] = []
    rows: list[int] = []
    # Same rule as Vocabulary.decode, so the words are exactly the caption users see.
    for step, token in enumerate(tokens[:length]):
        token = int(token)
        if token == vocabulary.end_id:
            break
        if token in (vocabulary.pad_id, vocabulary.start_id):
            continue
        words.append(vocabulary.words[token] if 0 <= token < vocabulary.size else "<unk>")
        rows.append(step)
    height, width = grid_shape(bundle)
    maps = attention[rows].reshape(len(rows), height, width)
    if display_size is not None and max(picture.size) > display_size:
        picture = picture.copy()
        picture.thumbnail((display_size, display_size), Image.Resampling.LANCZOS)
    return WordAttention(
        image=np.asarray(picture, dtype=np.uint8),
        words=words,
        maps=maps,
        score=float(np.asarray(result.scores)[0, 0]),
    )
