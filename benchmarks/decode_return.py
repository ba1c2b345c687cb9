"""Does sending pixels back from the decoder processes limit the decode pool?

    python benchmarks/decode_return.py [--images 300] [--processes N] [--photo-size 640x480]

Decodes the same photo-like JPEGs with ``load_image`` four ways and prints one JSON
object of images/s: in this process (one core), and through the job's decoder pool
(``pipelines.decode_pool.DecodePool``, one process per core) returning the 299 px
pixels through shared memory (what the job does), through the result pipe (what it did
before), and returning nothing but the size (the same decoding, no pixels back). When
``shared_memory`` is close to ``nothing_back``, returning pixels is not the ceiling.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stage_rates import make_photos  # noqa: E402
from captioning.images.decode import load_image  # noqa: E402
from pipelines.decode_pool import DecodePool  # noqa: E402


def through_pipe(data: bytes, image_size: int) -> tuple:
    """The pixels in a plain tuple: the pool pickles them into its result pipe."""
    decoded = load_image(data, image_size)
    return decoded.pixels, decoded.width, decoded.height


def nothing_back(data: bytes, image_size: int) -> tuple:
    decoded = load_image(data, image_size)
    return decoded.width, decoded.height


def pool_rate(function, payloads: list[bytes], processes: int, repeats: int) -> float:
    pool = DecodePool(function, processes, max(128, 2 * processes), 60.0)
    try:
        list(pool.submit("warm-up", payloads[0]))
        list(pool.drain())
        best = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            done = 0
            for index, payload in enumerate(payloads):
                done += sum(error is None for _, _, error in pool.submit(index, payload))
            done += sum(error is None for _, _, error in pool.drain())
            assert done == len(payloads)
            best = max(best, len(payloads) / (time.perf_counter() - started))
        return best
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--photo-size", default="500x375")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="decode-return-"))
    payloads = [path.read_bytes() for path in make_photos(folder, args.images, 5, args.photo_size)]
    started = time.perf_counter()
    for payload in payloads:
        load_image(payload, 299)
    in_process = len(payloads) / (time.perf_counter() - started)
    rates = {
        name: pool_rate(
            functools.partial(function, image_size=299), payloads, args.processes, args.repeats
        )
        for name, function in (
            ("shared_memory", load_image),
            ("pipe", through_pipe),
            ("nothing_back", nothing_back),
        )
    }
    print(
        json.dumps(
            {
                "images": len(payloads),
                "photo_size": args.photo_size,
                "processes": args.processes,
                "load_average": [round(load, 2) for load in os.getloadavg()],
                "in_process_per_core": round(in_process, 1),
                "pool_images_per_s": {name: round(rate, 1) for name, rate in rates.items()},
                "shared_memory_vs_nothing_back": round(
                    rates["shared_memory"] / rates["nothing_back"], 3
                ),
                "pipe_vs_nothing_back": round(rates["pipe"] / rates["nothing_back"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
