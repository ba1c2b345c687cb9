"""GPU JPEG decode benchmark: nvImageCodec + Keras resize (GpuJpegDecoder) vs Pillow (load_image).

    KERAS_BACKEND=jax python benchmarks/gpu_decode.py          # on the GPU machine
    python benchmarks/gpu_decode.py --small 32 --large 4 --unique 4 --pillow-small 16 \\
        --pillow-large 2                                        # smoke test, any machine

Makes photo-like JPEGs (gradients, soft blobs and sensor-like noise; quality 90, Pillow's
default 4:2:0 subsampling) at 640x480 and 4032x3024, plus files the GPU path must hand
to Pillow (progressive, CMYK, EXIF-rotated, PNG, truncated). Prints one JSON object:

- ``gpu``: "available", "unavailable" (then ``gpu_error`` says why; Pillow is still
  measured) or "nvimgcodec-cpu-backend" (``--nvimgcodec-cpu``: this code path on
  nvImageCodec's libjpeg-turbo decoder, to smoke-test it without a GPU; not a GPU speed);
- ``gpu_images_per_s``: per size, bytes -> [size, size, 3] uint8 numpy through
  ``decode_batch`` in batches of ``--batch-size`` (probe, one nvImageCodec batch decode,
  resize, copy to host), after one untimed warm-up batch (``gpu_warmup_s``: JAX compiles
  each op once per input shape); ``gpu_decode_only_images_per_s``: the nvImageCodec batch
  call alone, so that decode and resize can be told apart;
- ``pillow_images_per_s_per_core``: per size, ``load_image`` in one thread;
- ``routed_to_pillow``: on a mixed batch (friendly photos and the awkward files), the
  share ``decode_batch`` returned as None, the probe's reasons, how many friendly photos
  the GPU decoded, and what ``load_image`` made of each awkward file it handed back
  ("pixels" or the errors-table type); without a GPU, the share the probe alone routes;
- ``difference_vs_pillow``: per size, over the distinct friendly images, the mean
  absolute difference between GPU and Pillow pixels in 0-255 units (``mad_mean`` and
  ``mad_max``: the mean and max over images of each image's mean) and the largest
  single-pixel difference (``max_abs``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

# On the GPU machine: JAX, unless KERAS_BACKEND says otherwise; and no preallocation of
# most of the GPU's memory by JAX, because nvImageCodec allocates with its own cudaMalloc.
if importlib.util.find_spec("jax") is not None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the GPU machine runs from a checkout, not an install

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from captioning.images.decode import ImageDecodeError, load_image  # noqa: E402
from captioning.images.gpu_decode import (  # noqa: E402
    DEFAULT_BACKENDS,
    GpuDecodeUnavailable,
    GpuJpegDecoder,
)
from captioning.images.jpeg_probe import probe_jpeg  # noqa: E402

SIZES = {"640x480": (640, 480), "4032x3024": (4032, 3024)}


# === Inputs ===
def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Gradients, a few soft colour blobs and noise: JPEG-coding cost like a real photo."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    low, high = rng.uniform(0, 90, 3).astype(np.float32), rng.uniform(150, 255, 3)
    pixels = low + (high.astype(np.float32) - low) * (0.6 * x + 0.4 * y)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        pixels = pixels + blob * rng.uniform(-90, 90, 3).astype(np.float32)
    pixels = pixels + rng.standard_normal((height, width, 3), dtype=np.float32) * 8.0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode(image: Image.Image, format: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    if format == "JPEG":
        kwargs.setdefault("quality", 90)
    image.save(buffer, format, **kwargs)
    return buffer.getvalue()


def awkward_files(rng: np.random.Generator) -> dict[str, bytes]:
    """Files the GPU path must hand to Pillow, one per reason."""
    photo = photo_like(640, 480, rng)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    truncated = encode(photo)
    return {
        "progressive": encode(photo, progressive=True),
        "cmyk": encode(photo.convert("CMYK")),
        "exif_rotated": encode(photo, exif=exif.tobytes()),
        "png": encode(photo, "PNG"),
        "truncated": truncated[: len(truncated) // 2],
    }


# === Measurements ===
def images_per_s(run, count: int, repeats: int) -> float:
    """Median over ``repeats`` timed passes of ``run()``, which handles ``count`` images."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(count / statistics.median(times), 2)


def pillow_rate(unique: list[bytes], count: int, size: int, repeats: int) -> float:
    items = [unique[index % len(unique)] for index in range(count)]
    return images_per_s(lambda: [load_image(data, size) for data in items], count, repeats)


def in_batches(items: list[bytes], batch_size: int) -> list[list[bytes]]:
    return [items[start : start + batch_size] for start in range(0, len(items), batch_size)]


def gpu_rates(decoder: GpuJpegDecoder, unique: list[bytes], count: int, args) -> dict:
    batches = in_batches([unique[index % len(unique)] for index in range(count)], args.batch_size)
    start = time.perf_counter()
    decoder.decode_batch(batches[0], args.size)  # compiles the resize for these shapes
    warmup = time.perf_counter() - start

    def run() -> None:
        for batch in batches:
            decoder.decode_batch(batch, args.size)

    # The nvImageCodec call alone (what decode_batch makes of these friendly files).
    nvimgcodec = decoder._nvimgcodec
    streams = [[nvimgcodec.CodeStream(data) for data in batch] for batch in batches]

    def decode_only() -> None:
        for batch in streams:
            decoder._decoder.decode(batch, params=decoder._params)

    return {
        "images_per_s": images_per_s(run, count, args.repeats),
        "decode_only_images_per_s": images_per_s(decode_only, count, args.repeats),
        "warmup_s": round(warmup, 3),
    }


def differences(decoder: GpuJpegDecoder, unique: list[bytes], size: int) -> dict:
    """Mean absolute GPU-vs-Pillow pixel differences, per image, in 0-255 units."""
    means, worst = [], 0
    for batch in in_batches(unique, 64):
        for data, gpu in zip(batch, decoder.decode_batch(batch, size), strict=True):
            if gpu is None:
                continue
            cpu = load_image(data, size)
            assert (gpu.width, gpu.height) == (cpu.width, cpu.height)
            difference = np.abs(gpu.pixels.astype(np.int16) - cpu.pixels.astype(np.int16))
            means.append(float(difference.mean()))
            worst = max(worst, int(difference.max()))
    if not means:
        return {"images": 0}
    return {
        "images": len(means),
        "mad_mean": round(statistics.fmean(means), 4),
        "mad_max": round(max(means), 4),
        "max_abs": worst,
    }


def outcome(data: bytes, size: int):
    """``load_image``'s answer: pixels, or the error type an errors row would carry."""
    try:
        return load_image(data, size).pixels
    except ImageDecodeError as error:
        return error.error_type


def routing(decoder: GpuJpegDecoder | None, friendly: list[bytes], awkward: dict, size: int):
    """Share of a mixed batch that goes to Pillow, and which files went there."""
    items = list(friendly) + list(awkward.values())
    reasons: dict[str, int] = {}
    for data in items:
        reason = probe_jpeg(data).reason
        reasons[reason] = reasons.get(reason, 0) + 1
    report: dict = {"of": len(items), "probe_reasons": reasons}
    if decoder is None:  # what the probe alone would route
        report["share"] = round(sum(not probe_jpeg(d).friendly for d in items) / len(items), 4)
        return report
    decoded = decoder.decode_batch(items, size)
    # A None is decoded by load_image, so its pixels or error type are the CPU path's own:
    # listed here so that a reader sees every awkward file took that path.
    report.update(
        share=round(sum(item is None for item in decoded) / len(items), 4),
        friendly_decoded_on_gpu=sum(item is not None for item in decoded[: len(friendly)]),
        awkward_to_pillow={
            name: "pixels" if not isinstance(o := outcome(data, size), str) else o
            for name, data, item in zip(
                awkward, awkward.values(), decoded[len(friendly) :], strict=True
            )
            if item is None
        },
    )
    return report


def describe_device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return f"jax {jax.__version__}: {jax.devices()[0].device_kind}"
    return keras.backend.backend()


# === Main ===
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=299, help="model input square (default 299)")
    parser.add_argument("--batch-size", type=int, default=64, help="decode_batch size (64)")
    parser.add_argument("--small", type=int, default=512, help="640x480 images timed on GPU")
    parser.add_argument("--large", type=int, default=128, help="4032x3024 images timed on GPU")
    parser.add_argument("--pillow-small", type=int, default=128, help="640x480 timed on Pillow")
    parser.add_argument("--pillow-large", type=int, default=16, help="4032x3024 on Pillow")
    parser.add_argument(
        "--unique", type=int, default=16, help="distinct images per size, cycled (16)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median counts")
    parser.add_argument(
        "--backends",
        default=",".join(DEFAULT_BACKENDS),
        help="nvImageCodec backends in order: hw (NVJPG engine), hybrid (CUDA nvJPEG), cpu",
    )
    parser.add_argument(
        "--no-fancy-upsampling",
        action="store_true",
        help="nvJPEG's plain chroma upsampling (libjpeg and Pillow interpolate)",
    )
    parser.add_argument(
        "--nvimgcodec-cpu",
        action="store_true",
        help="smoke test: run the GPU code path on nvImageCodec's CPU decoder",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    photos = {
        name: [encode(photo_like(w, h, rng)) for _ in range(min(args.unique, 64))]
        for name, (w, h) in SIZES.items()
    }
    counts = {"640x480": args.small, "4032x3024": args.large}
    pillow_counts = {"640x480": args.pillow_small, "4032x3024": args.pillow_large}
    awkward = awkward_files(rng)
    result: dict = {
        "size": args.size,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "pillow_images_per_s_per_core": {
            name: pillow_rate(photos[name], pillow_counts[name], args.size, args.repeats)
            for name in SIZES
        },
    }

    backends = ("cpu",) if args.nvimgcodec_cpu else tuple(args.backends.split(","))
    try:
        decoder = GpuJpegDecoder(backends=backends, fancy_upsampling=not args.no_fancy_upsampling)
    except GpuDecodeUnavailable as error:
        decoder = None
        result.update(gpu="unavailable", gpu_error=str(error))
    if decoder is not None:
        from nvidia import nvimgcodec

        result.update(
            gpu="nvimgcodec-cpu-backend" if args.nvimgcodec_cpu else "available",
            device=describe_device(),
            nvimgcodec=nvimgcodec.__version__,
            backends=list(backends),
        )
        rates = {name: gpu_rates(decoder, photos[name], counts[name], args) for name in SIZES}
        result["gpu_images_per_s"] = {name: rate["images_per_s"] for name, rate in rates.items()}
        result["gpu_decode_only_images_per_s"] = {
            name: rate["decode_only_images_per_s"] for name, rate in rates.items()
        }
        result["gpu_warmup_s"] = {name: rate["warmup_s"] for name, rate in rates.items()}
        result["gpu_vs_one_pillow_core"] = {
            name: round(result["gpu_images_per_s"][name] / pillow, 2)
            for name, pillow in result["pillow_images_per_s_per_core"].items()
        }
        result["difference_vs_pillow"] = {
            name: differences(decoder, photos[name], args.size) for name in SIZES
        }
    small = photos["640x480"]
    mixed = [small[index % len(small)] for index in range(max(1, args.batch_size - len(awkward)))]
    result["routed_to_pillow"] = routing(decoder, mixed, awkward, args.size)
    if decoder is not None:
        result["decoder_stats"] = dict(sorted(decoder.stats.items()))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
