"""Captioning a list of local image files with a loaded bundle (``predict``, ``evaluate``).

The Beam pipeline does the same at scale; this is the in-process path for a
handful to a few thousand images. Decoding runs in threads, overlapped with the
model (Pillow releases the GIL while it decodes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning.bundle import LoadedBundle
from captioning.images.decode import ImageDecodeError, load_image


@dataclass
class Caption:
    image: str
    caption: str
    score: float
    alternatives: list[tuple[str, float]]
    attention: np.ndarray | None = None  # [words, grid] for the best caption
    error: str | None = None


def decode_results(bundle: LoadedBundle, result, keep_attention: bool = False) -> list[tuple]:
    """SearchResult -> per image (caption, score, alternatives, attention)."""
    tokens = np.asarray(result.tokens)
    scores = np.asarray(result.scores)
    lengths = np.asarray(result.lengths)
    attention = np.asarray(result.attention) if keep_attention else None
    decoded = []
    for row in range(tokens.shape[0]):
        beams = [
            (bundle.vocabulary.decode(tokens[row, k]), float(scores[row, k]))
            for k in range(tokens.shape[1])
        ]
        weights = None
        if attention is not None:
            weights = attention[row, 0, : max(int(lengths[row, 0]), 1)]
        decoded.append((beams[0][0], beams[0][1], beams[1:], weights))
    return decoded


def caption_files(
    bundle: LoadedBundle,
    paths: Sequence[str],
    batch_size: int = 32,
    beam_width: int | None = None,
    keep_attention: bool = False,
) -> Iterator[Caption]:
    """Caption local files in order; unreadable files yield a Caption with ``error`` set."""
    size = bundle.config.image.image_size
    max_pixels = bundle.config.image.max_pixels

    def decode(path: str):
        try:
            return load_image(Path(path).read_bytes(), size, max_pixels).pixels, None
        except (OSError, ImageDecodeError) as error:
            return None, f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start : start + batch_size])
            decoded = list(pool.map(decode, chunk))
            good = [i for i, (pixels, _) in enumerate(decoded) if pixels is not None]
            outputs: dict[int, tuple] = {}
            if good:
                batch = np.stack([decoded[i][0] for i in good])
                result = bundle.captioner.generate(batch, beam_width=beam_width)
                outputs = dict(
                    zip(good, decode_results(bundle, result, keep_attention), strict=True)
                )
            for i, path in enumerate(chunk):
                if i in outputs:
                    caption, score, alternatives, weights = outputs[i]
                    yield Caption(path, caption, score, alternatives, weights)
                else:
                    yield Caption(path, "", float("nan"), [], error=decoded[i][1])
