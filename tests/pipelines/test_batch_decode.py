"""JPEG examples decoded next to the model: Pillow takes over whatever the GPU does not."""

from __future__ import annotations

import numpy as np

from captioning.images.decode import load_image
from pipelines.batch_decode import decode_examples
from tests.images import awkward_files


class _FailingDecoder:
    """A GPU decoder whose batch call fails outright (a CUDA error, say)."""

    def decode_batch(self, items, size, to_numpy=True):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def _examples() -> list[dict]:
    pixels = np.zeros((75, 75, 3), np.uint8)
    return [
        {"jpeg": awkward_files.jpeg(), "width": None, "height": None},
        {"pixels": pixels, "width": 7, "height": 9},
        {"jpeg": awkward_files.truncated_jpeg(), "width": None, "height": None},
        # Re-encoded on a CPU worker (--right-fit): the original size travels with it.
        {"jpeg": awkward_files.jpeg(), "width": 4000, "height": 3000},
    ]


def test_without_a_gpu_decoder_pillow_decodes_and_errors_are_named_as_on_the_cpu_path():
    for decoder in (None, _FailingDecoder()):
        decoded = decode_examples(_examples(), 75, 50_000_000, decoder)
        expected = load_image(awkward_files.jpeg(), 75)
        assert np.array_equal(decoded[0].pixels, expected.pixels)
        assert (decoded[0].width, decoded[0].height) == (expected.width, expected.height)
        assert (decoded[1].width, decoded[1].height, decoded[1].error) == (7, 9, None)
        assert decoded[2].pixels is None and decoded[2].error[0] == "CorruptImage"
        assert (decoded[3].width, decoded[3].height) == (4000, 3000)
