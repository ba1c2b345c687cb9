"""Stage rates of the caption job, measured one stage at a time, and the bottleneck named.

    python benchmarks/stage_rates.py --bundle B              # 2 CPU cores: ~10 minutes
    python benchmarks/stage_rates.py --bundle B --images 64 --seconds 2   # ~3 minutes
    KERAS_BACKEND=jax python benchmarks/stage_rates.py --bundle B --photo-size 640x480 \\
        --caption-flags "--gpu" --cost 0.85 --skip end_to_end         # the GPU machine

Prints one JSON object. Every rate is images per second, measured in this run on the
same photo-like JPEGs the end-to-end run captions (``--photo-size``, default ~500x375):

- ``read``: the job's reader (Beam ``FileSystems``; plain ``open`` without Beam) over
  the files, images/s and MB/s. The files were just written, so the page cache is warm;
- ``decode_cpu``: ``captioning.images.decode.load_image`` in this process (one core)
  and through the job's own decoder pool (``pipelines.decode_pool``, one spawned
  decoder per core, pixels sent back to the parent), with
  ``pool_efficiency = all_cores / (per_core * cores)``: well under 1 means returning the
  pixels (or the pool itself) is the ceiling, not the cores;
- ``decode_gpu``: ``captioning.images.gpu_decode.GpuJpegDecoder().decode_batch`` in
  batches, or ``{"status": "unavailable", "reason": ...}`` without that module or a GPU;
- ``encode``: the bundle's encoder alone (``ImageFeatures(...).predict_on_batch`` on
  uint8 pixels decoded from the photos), at the job's batch size;
- ``search``: caption search alone (``CaptionSearch(...).predict_on_batch``) on the
  encode stage's projected features, with the bundle's beam width and
  ``max_length - 1``; ``to_text_ms_per_image`` is the tokens -> words step after it;
- ``generate``: ``captioner.generate`` on pixels, the call the job makes (under JAX
  encoder and search are one jitted function and the features never leave the device);
- ``write``: caption rows (``run_layout.CAPTIONS_SCHEMA``) -> snappy Parquet with pyarrow;
- ``reference``: ``keras.applications.InceptionV3(include_top=False, weights=None)`` at
  299 px under ``mixed_bfloat16``, ``predict_on_batch`` at the job's batch size;
- ``end_to_end``: the ``captioning caption`` CLI (DirectRunner) on N and 3N photos,
  marginal rate 2N / (t(3N) - t(N)), and ``end_to_end_vs_reference`` (the CPU target
  is >= 0.9 with a 299 px production-shaped bundle at mixed_bfloat16);
- ``bottleneck``: the slowest of read / decode (best device, all cores) / encode /
  search / write, ``stage_ms_per_image`` for each, and with ``--cost`` dollars per
  million images end to end and at the bottleneck's rate (the floor if every other stage
  were free). On a CPU machine the stages share the cores, so
  ``shared_cores_images_per_s`` = 1 / sum(1 / rate) is the nearer ceiling;
- ``warnings``: e.g. an end-to-end rate that beats its slowest stage (N too small for
  t(3N) - t(N) to rise above start-up noise).

Nothing here imports TensorFlow: the model stages go through Keras' predict path and
numpy, so the script runs on the TensorFlow and on the JAX backend alike. Without
``--bundle`` a production-shaped bundle is built first
(``caption_throughput.build_production_bundle``: trains on TensorFlow, ~5 minutes on 2
cores); ``--untrained-bundle`` builds the same shapes with an untrained decoder and no
TensorFlow (its captions run to the full length: the worst case for search), which is
how the GPU machine gets one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import inspect
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captioning import precision

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from caption_throughput import (  # noqa: E402
    build_production_bundle,
    caption_run,
    photo_like_jpegs,
)
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

SECTIONS = (
    "read",
    "decode_cpu",
    "decode_gpu",
    "encode",
    "search",
    "generate",
    "write",
    "reference",
    "end_to_end",
)
BOTTLENECK_STAGES = ("read", "decode", "encode", "search", "write")
DEFAULT_PHOTO_SIZE = "500x375"

COST_HELP = """\
machine prices (repeatable). SPEC is one of:
  PRICE                       this machine's shape (or --cores / --gpus), e.g. 0.85
  NAME:PRICE[:CORES[:GPUS]]   a named shape, e.g. g2-standard-8:0.85:8:1
                              (a leading "machine=" is accepted)
  FILE.json                   [{"name": "g2-standard-8", "price_per_hour": 0.85,
                                "cores": 8, "gpus": 1}, ...] or {"NAME": {...}, ...}
PRICE is dollars per hour. For each machine it prints dollars per million images =
price_per_hour / (images_per_s * 3600) * 1e6, end to end and at the bottleneck
stage's rate. A shape other than the measured one is projected: CPU stages scale
with cores (decoding by per_core * cores * pool_efficiency), model stages with
GPUs (or cores, measured on a CPU), end to end by the bottleneck's change; such
rows say "basis": "projected ...". No projection across CPU-only and GPU shapes."""

EPILOG = """\
example:
  python benchmarks/stage_rates.py --bundle /tmp/prod/bundle --images 300 \\
      --cost 0.097 --cost n2-standard-8:0.39:8 --cost g2-standard-8:0.85:8:1
"""


def _log(message: str) -> None:
    print(f"[stage_rates] {message}", file=sys.stderr, flush=True)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


# === Machine ===
def worker_cores() -> int:
    """The cores this process may run on (what the job's decoder pool sizes itself by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": worker_cores(), "cpu_count": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((line for line in cpuinfo.splitlines() if line.startswith("model name")), "")
        info["cpu"] = model.split(":", 1)[-1].strip()
        info["cpu_bf16"] = "amx_bf16" in cpuinfo or "avx512_bf16" in cpuinfo
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split("\n")
        info["gpu_names"] = [name.strip() for name in names if name.strip()]
    except (OSError, subprocess.SubprocessError):
        info["gpu_names"] = []
    return info


def model_devices() -> tuple[str, int]:
    """The Keras backend's device kind ("gpu" or "cpu") and how many of it."""
    import keras

    try:
        devices = [str(device).lower() for device in keras.distribution.list_devices()]
    except Exception:  # noqa: BLE001 - an old Keras or odd backend: assume the CPU
        devices = []
    gpus = [device for device in devices if device.startswith(("gpu", "cuda"))]
    return ("gpu", len(gpus)) if gpus else ("cpu", 0)


# === Timing ===
def _measure(
    run: Callable[[], int], seconds: float, min_calls: int = 2, warmup: int = 1
) -> tuple[float, int, float]:
    """Call ``run`` (which returns how many images it handled) ``warmup`` times, then
    until ``seconds`` have passed and at least ``min_calls`` were made.
    Returns (images/s, calls, seconds)."""
    for _ in range(warmup):
        run()
    images = calls = 0
    started = time.perf_counter()
    while True:
        images += run()
        calls += 1
        elapsed = time.perf_counter() - started
        if calls >= min_calls and elapsed >= seconds:
            return images / elapsed, calls, elapsed


# === Inputs ===
def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 640x480, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"a photo size must be positive, got {text!r}")
    return width, height


def _noise_tiles(seed: int, side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """int16 noise: texture (sigma 18, blurred like ``photo_like_jpegs``') and sensor
    noise (sigma 6, unblurred, as on the GPU machine's test photos)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 18, (side, side, 3)) + 128
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    texture = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.int16) - 128
    return texture, np.rint(rng.normal(0, 6, (side, side, 3))).astype(np.int16)


def _tiled(tile: np.ndarray, rng: random.Random, height: int, width: int) -> np.ndarray:
    side = tile.shape[0]
    shifted = np.roll(tile, (rng.randrange(side), rng.randrange(side)), axis=(0, 1))
    return np.tile(shifted, (math.ceil(height / side), math.ceil(width / side), 1))[:height, :width]


def _sized_photo(
    path: Path, width: int, height: int, seed: int, tiles: tuple[np.ndarray, np.ndarray]
) -> None:
    rng = random.Random(seed)
    texture, sensor = tiles
    row = np.linspace(rng.randint(0, 120), rng.randint(120, 255), width).astype(np.int16)
    pixels = _tiled(texture, rng, height, width) + row[None, :, None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(rng.randint(3, 8)):
        x, y = rng.randint(0, width), rng.randint(0, height)
        r = rng.randint(max(1, short // 40), max(2, short // 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in "rgb"))
    pixels = np.asarray(image, dtype=np.int16) + _tiled(sensor, rng, height, width)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def sized_photo_jpegs(
    directory: Path, count: int, seed: int, width: int, height: int, workers: int
) -> list[Path]:
    """``photo_like_jpegs``' recipe (gradient, blurred noise, shapes) at one exact size,
    plus sensor noise and quality 90 like the GPU machine's test photos, so that they
    compress (and decode) more like camera photos; threaded, since numpy and Pillow's
    encoder release the GIL."""
    directory.mkdir(parents=True, exist_ok=True)
    tiles = _noise_tiles(seed)
    paths = [directory / f"photo_{seed}_{index:05d}.jpg" for index in range(count)]
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        jobs = [
            pool.submit(_sized_photo, path, width, height, seed * 100_003 + index, tiles)
            for index, path in enumerate(paths)
        ]
        for job in jobs:
            job.result()
    return paths


def make_photos(workdir: Path, count: int, seed: int, size: str) -> list[Path]:
    """``count`` photo-like JPEGs of ``size`` in their own folder (reused if complete)."""
    directory = workdir / f"photos_{size}_{count}_{seed}"
    existing = sorted(directory.glob("*.jpg"))
    if len(existing) == count:
        return existing
    if directory.exists():
        shutil.rmtree(directory)
    started = time.perf_counter()
    if size == DEFAULT_PHOTO_SIZE:
        paths = photo_like_jpegs(directory, count, seed)  # 500x375 and its usual variants
    else:
        paths = sized_photo_jpegs(directory, count, seed, *parse_size(size), worker_cores())
    _log(f"wrote {count} {size} photos in {time.perf_counter() - started:.1f} s")
    return sorted(paths)


# === Read ===
def read_stage(paths: list[Path], seconds: float) -> dict[str, Any]:
    try:
        from apache_beam.io.filesystems import FileSystems

        def read(path: str) -> bytes:
            with FileSystems.open(path) as handle:
                return handle.read()

        reader = "apache_beam FileSystems.open (the job's ReadBytes)"
    except ImportError:

        def read(path: str) -> bytes:
            with open(path, "rb") as handle:
                return handle.read()

        reader = "open() (no Beam here)"
    names = [str(path) for path in paths]
    total_bytes = sum(path.stat().st_size for path in paths)

    def run() -> int:
        for name in names:
            read(name)
        return len(names)

    rate, calls, _ = _measure(run, seconds, min_calls=1)
    return {
        "images_per_s": _round(rate),
        "mb_per_s": _round(rate * total_bytes / len(paths) / 1e6),
        "mean_kb_per_image": _round(total_bytes / len(paths) / 1e3, 1),
        "reader": reader,
        "page_cache": "warm (files just written)",
        "passes": calls,
    }


# === Decode ===
def decode_cpu_stage(
    blobs: list[bytes], image_size: int, max_pixels: int, seconds: float
) -> tuple[dict[str, Any], list[np.ndarray]]:
    from captioning.images.decode import load_image

    decode = functools.partial(load_image, image_size=image_size, max_pixels=max_pixels)
    pixels: list[np.ndarray] = []

    def one_core() -> int:
        pixels.clear()
        for blob in blobs:
            pixels.append(decode(blob).pixels)
        return len(blobs)

    per_core, _, _ = _measure(one_core, seconds, min_calls=1, warmup=0)

    processes = worker_cores()
    all_cores = _pool_rate(decode, processes, blobs, image_size, seconds)
    # One decoder: what the pool's own overhead (pickling the pixels back, the parent's
    # bookkeeping) costs when a core is free for it; with all_cores it tells an IPC
    # ceiling from cores that are simply busy.
    one = _pool_rate(decode, 1, blobs, image_size, seconds) if processes > 1 else all_cores
    rate = all_cores["images_per_s"]
    return {
        "per_core_images_per_s": _round(per_core),
        "all_cores_images_per_s": _round(rate),
        "cores": processes,
        "pool_efficiency": _round(rate / (per_core * processes), 3),
        "one_decoder_pool_images_per_s": _round(one["images_per_s"]),
        "pool": f"pipelines.decode_pool.DecodePool({processes} spawned decoders, "
        f"window {all_cores['window']})",
        "pool_start_seconds": _round(all_cores["start_seconds"]),
        "pixels_returned_mb_per_s": _round(rate * image_size * image_size * 3 / 1e6),
        "images_per_pool_pass": all_cores["images_per_pass"],
    }, list(pixels)


def _pool_rate(
    decode: Callable[[bytes], Any],
    processes: int,
    blobs: list[bytes],
    image_size: int,
    seconds: float,
) -> dict[str, Any]:
    """images/s through the job's decoder pool, sized as ``PooledDecode.setup`` sizes
    it (a window of at least 128 and two per decoder; the default timeout)."""
    from pipelines.decode_pool import DecodePool

    window = max(128, 2 * processes)
    pool = DecodePool(decode, processes, window, timeout=30.0)
    errors: list[str] = []

    def collect(completed) -> int:
        done = 0
        for _key, result, error in completed:
            if error is not None:
                errors.append(f"{type(error).__name__}: {error}")
            elif result.pixels.shape[0] != image_size:
                errors.append(f"unexpected pixels {result.pixels.shape}")
            done += 1
        return done

    def run(items: list[bytes]) -> int:
        done = 0
        for index, blob in enumerate(items):
            done += collect(pool.submit(index, blob))
        return done + collect(pool.drain())

    try:
        started = time.perf_counter()
        run(blobs[: 2 * processes])  # spawn the decoders and import their modules
        start_seconds = time.perf_counter() - started
        # Enough images per call that the window stays full: the steady state, not the
        # fill and drain at each end.
        stream = blobs * math.ceil(4 * window / len(blobs))
        rate, _, _ = _measure(lambda: run(stream), seconds, min_calls=1, warmup=0)
    finally:
        pool.close()
    if errors:
        raise RuntimeError(f"the decoder pool failed on the benchmark photos: {errors[:3]}")
    return {
        "images_per_s": rate,
        "window": window,
        "start_seconds": start_seconds,
        "images_per_pass": len(stream),
    }


def _sync(result: Any) -> None:
    """Wait until a GPU decoder's output exists (device arrays are returned early)."""
    items = result if isinstance(result, (list, tuple)) else [result]
    modules = set()
    for item in items:
        item = getattr(item, "pixels", item)
        if hasattr(item, "block_until_ready"):
            item.block_until_ready()
        modules.add(type(item).__module__.split(".")[0])
    if "cupy" in modules:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    if "torch" in modules:
        import torch

        torch.cuda.synchronize()


def decode_gpu_stage(
    blobs: list[bytes], image_size: int, max_pixels: int, batch: int, seconds: float
) -> dict[str, Any]:
    """``GpuJpegDecoder.decode_batch`` as the job's inference step calls it (device
    tensors out, ``to_numpy=False``, where the decoder has that option)."""
    try:
        from captioning.images import gpu_decode
    except Exception as error:  # noqa: BLE001 - missing module or its libraries
        return {
            "status": "unavailable",
            "reason": f"import captioning.images.gpu_decode: {type(error).__name__}: {error}",
        }
    try:
        available = gpu_decode.decode_device_available()
    except Exception as error:  # noqa: BLE001
        return {
            "status": "unavailable",
            "reason": f"decode_device_available(): {type(error).__name__}: {error}",
        }
    if not available:
        why = getattr(gpu_decode, "_unavailable_reason", lambda: None)()
        return {"status": "unavailable", "reason": why or "decode_device_available() is False"}
    try:
        decoder = gpu_decode.GpuJpegDecoder(max_pixels=max_pixels)
    except TypeError:  # a decoder without that option
        decoder = None
    except Exception as error:  # noqa: BLE001 - GpuDecodeUnavailable says why
        return {"status": "unavailable", "reason": f"{type(error).__name__}: {error}"[:500]}
    batches = [blobs[i : i + batch] for i in range(0, len(blobs), batch)]
    handled: list[int] = []
    try:
        decoder = decoder or gpu_decode.GpuJpegDecoder()
        options = {}
        if "to_numpy" in inspect.signature(decoder.decode_batch).parameters:
            options["to_numpy"] = False

        def run() -> int:
            handled.clear()
            for part in batches:
                results = decoder.decode_batch(part, image_size, **options)
                _sync(results)
                handled.append(sum(item is not None for item in results))
            return len(blobs)

        rate, passes, _ = _measure(run, seconds, min_calls=1)
    except Exception as error:  # noqa: BLE001 - report it, keep the other stages
        return {"status": "failed", "reason": f"{type(error).__name__}: {error}"[:500]}
    on_gpu = sum(handled)
    result: dict[str, Any] = {
        "status": "ok",
        "images_per_s": _round(rate),
        "batch": batch,
        "to_numpy": options.get("to_numpy", True),
        # decode_batch returns None for what it leaves to Pillow: the rate above is
        # only the GPU's when this is 1.
        "share_decoded_on_gpu": _round(on_gpu / len(blobs), 3),
        "passes": passes,
    }
    stats = getattr(decoder, "stats", None)
    if stats:
        result["decoder_stats"] = dict(stats)
    return result


# === Model stages ===
def _batch_of(pixels: list[np.ndarray], batch: int, image_size: int) -> tuple[np.ndarray, str]:
    if pixels:
        chosen = [pixels[i % len(pixels)] for i in range(batch)]
        return np.stack(chosen).astype(np.uint8), "decoded benchmark photos"
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8), "random"


def model_stages(
    loaded,
    pixels: np.ndarray,
    batch: int,
    beam_width: int,
    jit_compile: bool,
    skip: set[str],
    seconds: float,
) -> tuple[dict[str, Any], list[tuple]]:
    """encode, search and generate; also the captions (for realistic rows to write)."""
    import keras

    from captioning.inference import decode_results
    from captioning.models.caption_generation import CaptionSearch, ImageFeatures
    from captioning.models.caption_search import SearchResult

    captioner = loaded.captioner
    on_jax = keras.backend.backend() == "jax"
    max_length = captioner.max_length - 1
    report: dict[str, Any] = {}
    features = None
    if "encode" not in skip:
        encoder = ImageFeatures(captioner, from_features=False)
        if not on_jax:
            encoder.jit_compile = False  # as Generator: oneDNN kernels, no XLA, for the CNN
        outputs: list[np.ndarray] = []

        def encode() -> int:
            outputs[:] = [np.asarray(encoder.predict_on_batch(pixels))]
            return batch

        rate, calls, _ = _measure(encode, seconds)
        features = outputs[0]
        report["encode"] = {
            "images_per_s": _round(rate),
            "batch": batch,
            "features_shape": list(features.shape[1:]),
            "calls": calls,
        }
    captions: list[tuple] = []
    if "search" not in skip:
        source = "encode stage"
        if features is None:
            grid = captioner.encoder.grid_size
            dim = captioner.encoder.projection_dim
            features = np.random.default_rng(3).normal(0, 1, (batch, grid, dim)).astype("float32")
            source = "random (encode skipped)"
        search = CaptionSearch(captioner, beam_width, max_length)
        if not on_jax:
            search.jit_compile = jit_compile  # the job's: XLA with --gpu only
        results: list[Any] = []

        def run_search() -> int:
            results[:] = [search.predict_on_batch(features)]
            return batch

        rate, calls, _ = _measure(run_search, seconds)
        result = SearchResult(*(np.asarray(output) for output in results[0]))
        started = time.perf_counter()
        captions = decode_results(loaded, result)
        to_text = (time.perf_counter() - started) * 1000 / batch
        report["search"] = {
            "images_per_s": _round(rate),
            "batch": batch,
            "beam_width": beam_width,
            "max_length": max_length,
            "jit_compile": True if on_jax else jit_compile,
            "features": source,
            "to_text_ms_per_image": _round(to_text, 3),
            "calls": calls,
        }
    if "generate" not in skip:

        def generate() -> int:
            captioner.generate(pixels, beam_width=beam_width, jit_compile=jit_compile)
            return batch

        rate, calls, _ = _measure(generate, seconds)
        report["generate"] = {
            "images_per_s": _round(rate),
            "batch": batch,
            "note": "captioner.generate, the job's call: encode + search"
            + (" in one jitted function" if on_jax else ""),
            "calls": calls,
        }
    return report, captions


def write_stage(
    captions: list[tuple], workdir: Path, model_id: str, rows: int, seconds: float
) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from captioning import run_layout

    if not captions:  # search skipped: captions of typical length
        best = "a man in a red shirt is riding a bike down the street <end>"
        alternatives = [("a man is riding a bike down the street", -1.1)] * 2
        captions = [(best, -0.8, alternatives, None)]
    now = datetime.datetime.now(datetime.timezone.utc)
    records = []
    for index in range(rows):
        caption, score, alternatives, _ = captions[index % len(captions)]
        records.append(
            {
                "image_uri": f"gs://bucket/photos/2024/06/{index:08d}.jpg",
                "caption": caption,
                "score": float(score),
                "alternatives": [{"caption": c, "score": float(s)} for c, s in alternatives],
                "width": 500,
                "height": 375,
                "model_id": model_id,
                "captioned_at": now,
            }
        )
    target = workdir / "write_stage"
    target.mkdir(parents=True, exist_ok=True)
    path = target / "part-bench-00000-of-00001.parquet"

    def write() -> int:
        table = pa.Table.from_pylist(records, schema=run_layout.CAPTIONS_SCHEMA)
        pq.write_table(table, path, compression="snappy")
        return rows

    rate, calls, _ = _measure(write, seconds)
    return {
        "images_per_s": _round(rate),
        "rows_per_file": rows,
        "file_kb": _round(path.stat().st_size / 1e3, 1),
        "writer": "pa.Table.from_pylist(CAPTIONS_SCHEMA) + pq.write_table(snappy)",
        "calls": calls,
    }


def reference_stage(batch: int, seconds: float) -> dict[str, Any]:
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras.applications.InceptionV3(
            include_top=False, weights=None, input_shape=(299, 299, 3)
        )
    finally:
        keras.config.set_dtype_policy(previous)
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 299, 299, 3)).astype("float32")

    def forward() -> int:
        model.predict_on_batch(images)
        return batch

    rate, calls, _ = _measure(forward, seconds)
    return {
        "images_per_s": _round(rate),
        "model": "keras.applications.InceptionV3(include_top=False, weights=None), 299 px",
        "dtype_policy": "mixed_bfloat16",
        "batch": batch,
        "calls": calls,
    }


# === End to end ===
def end_to_end_stage(
    bundle: str, small: list[Path], large: list[Path], workdir: Path, extra: list[str]
) -> dict[str, Any]:
    runs = []
    for name, photos in (("n", small), ("3n", large)):
        output = workdir / f"out_{name}" / "captions"
        if output.parent.exists():
            shutil.rmtree(output.parent)
        pattern = str(photos[0].parent / "*.jpg")
        _log(f"end to end: captioning {len(photos)} photos")
        measured = caption_run(bundle, pattern, output, extra)
        if measured["captioned"] != len(photos):
            raise RuntimeError(f"captioned {measured['captioned']} of {len(photos)} photos")
        runs.append(measured)
    count = len(small)
    extra_seconds = runs[1]["seconds"] - runs[0]["seconds"]
    # 3N no slower than N: start-up jitter swamped the work; no rate can be read off.
    marginal = (len(large) - count) / extra_seconds if extra_seconds > 0 else None
    return {
        "images": [count, len(large)],
        "seconds": [_round(run["seconds"]) for run in runs],
        "marginal_images_per_s": _round(marginal),
        "peak_rss_mb": [round(run["peak_rss_mb"]) for run in runs],
        "flags": extra,
        "runner": "DirectRunner (captioning caption's default)",
    }


# === Bottleneck and cost ===
def stage_rate_table(report: dict[str, Any]) -> tuple[dict[str, float], str | None]:
    """images/s of each BOTTLENECK_STAGES entry that was measured; decode's device."""
    rates: dict[str, float] = {}
    for name in ("read", "encode", "search", "write"):
        rate = (report.get(name) or {}).get("images_per_s")
        if rate:
            rates[name] = rate
    decode_options = {}
    cpu = report.get("decode_cpu") or {}
    if cpu.get("all_cores_images_per_s"):
        decode_options["cpu"] = cpu["all_cores_images_per_s"]
    gpu = report.get("decode_gpu") or {}
    if gpu.get("status") == "ok":
        decode_options["gpu"] = gpu["images_per_s"]
    device = None
    if decode_options:
        device = max(decode_options, key=decode_options.get)
        rates["decode"] = decode_options[device]
    return rates, device


def parse_cost(spec: str, cores: int, gpus: int) -> list[dict[str, Any]]:
    """One --cost SPEC -> machines {name, price_per_hour, cores, gpus} (see COST_HELP)."""
    text = spec.strip().removeprefix("machine=")
    if text.lower().endswith(".json") or Path(text).is_file():
        data = json.loads(Path(text).read_text())
        if isinstance(data, dict) and "machines" in data:
            data = data["machines"]
        if isinstance(data, dict):
            data = [{"name": name, **fields} for name, fields in data.items()]
        machines = []
        for entry in data:
            price = entry.get("price_per_hour", entry.get("price"))
            if price is None:
                raise ValueError(f"{entry} has no price_per_hour")
            machines.append(
                {
                    "name": str(entry.get("name", entry.get("machine", "unnamed"))),
                    "price_per_hour": float(price),
                    "cores": int(entry.get("cores", cores)),
                    "gpus": int(entry.get("gpus", gpus)),
                }
            )
        return machines
    try:
        return [
            {"name": "this machine", "price_per_hour": float(text), "cores": cores, "gpus": gpus}
        ]
    except ValueError:
        pass
    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 4:
        raise ValueError("expected PRICE, NAME:PRICE[:CORES[:GPUS]] or FILE.json")
    try:
        return [
            {
                "name": parts[0],
                "price_per_hour": float(parts[1]),
                "cores": int(parts[2]) if len(parts) > 2 and parts[2] else cores,
                "gpus": int(parts[3]) if len(parts) > 3 and parts[3] else gpus,
            }
        ]
    except ValueError:
        raise ValueError("price, cores and gpus must be numbers") from None


def project_rates(
    report: dict[str, Any], measured: dict[str, Any], cores: int, gpus: int
) -> dict[str, float] | None:
    """Stage rates on another shape: CPU stages linear in cores, model stages in GPUs
    (in cores when measured on a CPU). None across CPU-only and GPU shapes."""
    on_gpu = measured["model_device"] == "gpu"
    if on_gpu != (gpus > 0):
        return None
    core_scale = cores / measured["cores"]
    model_scale = gpus / measured["gpus"] if on_gpu else core_scale
    rates: dict[str, float] = {}
    for name in ("read", "write"):
        if (report.get(name) or {}).get("images_per_s"):
            rates[name] = report[name]["images_per_s"] * core_scale
    for name in ("encode", "search"):
        if (report.get(name) or {}).get("images_per_s"):
            rates[name] = report[name]["images_per_s"] * model_scale
    decode = []
    cpu = report.get("decode_cpu") or {}
    if cpu.get("per_core_images_per_s"):
        decode.append(cpu["per_core_images_per_s"] * cores * cpu["pool_efficiency"])
    gpu = report.get("decode_gpu") or {}
    if gpu.get("status") == "ok" and gpus > 0 and measured["gpus"] > 0:
        decode.append(gpu["images_per_s"] * gpus / measured["gpus"])
    if decode:
        rates["decode"] = max(decode)
    return rates


def _per_million(price_per_hour: float, rate: float | None) -> float | None:
    return None if not rate else round(price_per_hour / (rate * 3600) * 1e6, 4)


def cost_rows(
    report: dict[str, Any], machines: list[dict[str, Any]], measured: dict[str, Any]
) -> list[dict[str, Any]]:
    rates, _ = stage_rate_table(report)
    end_to_end = (report.get("end_to_end") or {}).get("marginal_images_per_s")
    rows = []
    for machine in machines:
        row = dict(machine)
        same = machine["cores"] == measured["cores"] and machine["gpus"] == measured["gpus"]
        if same:
            shape_rates, e2e = rates, end_to_end
            row["basis"] = "measured on this machine"
        else:
            shape_rates = project_rates(report, measured, machine["cores"], machine["gpus"])
            if shape_rates is None:
                row["basis"] = (
                    "not projectable: measured with "
                    f"{measured['gpus']} GPUs, this shape has {machine['gpus']}; "
                    "run this benchmark on such a machine"
                )
                rows.append(row)
                continue
            e2e = None
            if end_to_end and rates and shape_rates:
                e2e = end_to_end * min(shape_rates.values()) / min(rates.values())
            row["basis"] = (
                f"projected from {measured['cores']} cores / {measured['gpus']} GPUs: "
                "CPU stages x cores, model stages x GPUs (x cores on a CPU)"
            )
        row["end_to_end_images_per_s"] = _round(e2e)
        row["dollars_per_million_images"] = _per_million(machine["price_per_hour"], e2e)
        if shape_rates:
            slowest = min(shape_rates, key=shape_rates.get)
            row["bottleneck"] = slowest
            row["bottleneck_images_per_s"] = _round(shape_rates[slowest])
            row["dollars_per_million_at_bottleneck"] = _per_million(
                machine["price_per_hour"], shape_rates[slowest]
            )
        rows.append(row)
    return rows


# === Main ===
def _job_settings(flags: list[str], bundle_beam_width: int) -> tuple[int, int, bool]:
    """(batch size, beam width, jit_compile) the caption job uses with these flags."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--max-batch-size", "--max_batch_size", dest="batch", type=int)
    parser.add_argument("--beam-width", "--beam_width", dest="beam_width", type=int)
    parser.add_argument("--gpu", dest="gpu", action="store_true")
    parser.add_argument("--no-gpu", "--no_gpu", dest="gpu", action="store_false")
    known, _ = parser.parse_known_args(flags)
    batch = known.batch or (128 if known.gpu else 64)
    return batch, known.beam_width or bundle_beam_width, bool(known.gpu)


def untrained_production_bundle(workdir: Path) -> str:
    """The production preset's shapes (299 px InceptionV3, 5,000 words, beam 3), built
    and saved through Keras alone: random weights, so it runs on a machine without
    TensorFlow."""
    import dataclasses

    from captioning.bundle import save_bundle
    from captioning.models.captioner import Captioner
    from captioning.presets import production
    from captioning.text.vocabulary import Vocabulary

    config = production().captioner
    config = dataclasses.replace(
        config, encoder=dataclasses.replace(config.encoder, backbone_weights=None)
    )
    words = [f"w{index}" for index in range(5000)]
    vocabulary = Vocabulary.build([" ".join(words)], max_words=5000, max_caption_words=24)
    model = Captioner.for_vocabulary(config, vocabulary, load_backbone_weights=False)
    out = workdir / "untrained_bundle"
    save_bundle(model, vocabulary, config, str(out))
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--bundle", help="a production-shaped bundle (built when omitted: slow)")
    parser.add_argument(
        "--untrained-bundle",
        action="store_true",
        help="without --bundle: build the production shapes untrained, on any Keras backend\n"
        "(seconds, no TensorFlow; captions run to full length, search's worst case)",
    )
    parser.add_argument(
        "--images", type=int, default=300, help="N: stages use N photos, end to end N and 3N"
    )
    parser.add_argument(
        "--precision",
        default="mixed_bfloat16",
        choices=precision.CHOICES,
        help="dtype policy for the bundle here and --precision of the job",
    )
    parser.add_argument(
        "--caption-flags",
        default="",
        help='extra flags for `captioning caption`, e.g. "--gpu" or "--max-batch-size 32";\n'
        "--max-batch-size, --beam-width and --gpu also set the stages' batch, beam\n"
        "width and jit_compile as the job would",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=SECTIONS,
        metavar="SECTION",
        help=f"sections to leave out: {', '.join(SECTIONS)}",
    )
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    parser.add_argument(
        "--photo-size",
        default=DEFAULT_PHOTO_SIZE,
        help=f"WxH of the photos (default {DEFAULT_PHOTO_SIZE}: photo_like_jpegs' mix of\n"
        "500x375, 375x500, 500x333, 480x360); e.g. 640x480, 4032x3024",
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="minimum timed seconds per stage (default 5)"
    )
    parser.add_argument("--cost", action="append", default=[], metavar="SPEC", help=COST_HELP)
    parser.add_argument(
        "--cores", type=int, help="cores of --cost shapes that name none (default: this machine's)"
    )
    parser.add_argument(
        "--gpus",
        type=int,
        help="GPUs of --cost shapes that name none (default: the model's devices here)",
    )
    args = parser.parse_args()
    try:
        parse_size(args.photo_size)
    except argparse.ArgumentTypeError as error:
        parser.error(f"--photo-size: {error}")
    skip = set(args.skip)
    if args.images < 1:
        parser.error("--images must be at least 1")
    for spec in args.cost:  # fail now, not after the measurements
        try:
            parse_cost(spec, 1, 0)
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as error:
            parser.error(f"--cost {spec}: {error}")

    started = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stage-rates-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine_info()}

    if args.bundle:
        bundle = args.bundle
    elif args.untrained_bundle:
        bundle = untrained_production_bundle(workdir)
    else:
        _log("building a production-shaped bundle (slow)")
        build_started = time.perf_counter()
        bundle = build_production_bundle(workdir)
        report["bundle_build_seconds"] = _round(time.perf_counter() - build_started, 1)
    from captioning.config import captioner_config_from_dict

    config = captioner_config_from_dict(
        json.loads((Path(bundle) / "captioner_config.json").read_text())
    )
    flags = shlex.split(args.caption_flags)
    batch, beam_width, jit_compile = _job_settings(flags, config.generation.beam_width)
    image_size = config.image.image_size
    report["bundle"] = bundle
    report["settings"] = {
        "image_size": image_size,
        "precision": args.precision,
        "batch": batch,
        "beam_width": beam_width,
        "photo_size": args.photo_size,
        "images": args.images,
        "seconds_per_stage": args.seconds,
    }

    photos = make_photos(workdir, args.images, seed=5, size=args.photo_size)
    blobs = [path.read_bytes() for path in photos]
    report["photos"] = {
        "folder": str(photos[0].parent),
        "count": len(photos),
        "mean_kb": _round(sum(map(len, blobs)) / len(blobs) / 1e3, 1),
    }

    # CPU stages first, before any model loads its thread pools into this process.
    if "read" not in skip:
        _log("read")
        report["read"] = read_stage(photos, args.seconds)
    pixels: list[np.ndarray] = []
    if "decode_cpu" not in skip:
        _log("decode_cpu")
        report["decode_cpu"], pixels = decode_cpu_stage(
            blobs, image_size, config.image.max_pixels, args.seconds
        )
    if "decode_gpu" not in skip:
        _log("decode_gpu")
        report["decode_gpu"] = decode_gpu_stage(
            blobs, image_size, config.image.max_pixels, batch, args.seconds
        )

    import keras

    from captioning.bundle import load_bundle

    device, gpus = model_devices()
    report["machine"].update(keras_backend=keras.backend.backend(), model_device=device, gpus=gpus)
    captions: list[tuple] = []
    model_id = "sha256-" + "0" * 32
    if not {"encode", "search", "generate"} <= skip:
        _log(f"loading {bundle} ({args.precision})")
        loaded = load_bundle(bundle, precision=args.precision)
        model_id = loaded.model_id
        report["settings"]["max_length"] = loaded.captioner.max_length - 1
        report["settings"]["dtype_policy"] = loaded.precision
        batch_pixels, source = _batch_of(pixels, batch, image_size)
        report["settings"]["model_input"] = source
        _log("encode / search / generate")
        stages, captions = model_stages(
            loaded, batch_pixels, batch, beam_width, jit_compile, skip, args.seconds
        )
        report.update(stages)
    if "write" not in skip:
        _log("write")
        report["write"] = write_stage(
            captions, workdir, model_id, max(1000, args.images), args.seconds
        )
    if "reference" not in skip:
        _log("reference")
        report["reference"] = reference_stage(batch, args.seconds)
    if "end_to_end" not in skip:
        large = make_photos(workdir, 3 * args.images, seed=6, size=args.photo_size)
        extra = ["--precision", args.precision, *flags]
        report["end_to_end"] = end_to_end_stage(bundle, photos, large, workdir, extra)
        if report["end_to_end"]["marginal_images_per_s"] is None:
            report.setdefault("warnings", []).append(
                "end to end: t(3N) <= t(N), start-up noise hides the work; raise --images"
            )
        elif "reference" not in skip:
            report["end_to_end_vs_reference"] = _round(
                report["end_to_end"]["marginal_images_per_s"] / report["reference"]["images_per_s"],
                3,
            )

    rates, decode_device = stage_rate_table(report)
    if rates:
        slowest = min(rates, key=rates.get)
        report["bottleneck"] = {"stage": slowest, "images_per_s": rates[slowest]}
        if decode_device:
            report["bottleneck"]["decode_device"] = decode_device
        report["stage_ms_per_image"] = {
            name: _round(1000 / rate, 3) for name, rate in rates.items()
        }
        if device == "cpu":
            # On a CPU machine the stages take turns on the same cores rather than
            # overlapping on separate devices: 1 / sum(1 / rate) is the rate if they
            # shared them perfectly, the realistic ceiling for end to end here.
            report["shared_cores_images_per_s"] = _round(
                1 / sum(1 / rate for rate in rates.values())
            )
        marginal = (report.get("end_to_end") or {}).get("marginal_images_per_s")
        if marginal and marginal > 1.1 * rates[slowest]:
            report.setdefault("warnings", []).append(
                f"end to end ({marginal}/s) beat its slowest stage ({slowest}, "
                f"{rates[slowest]}/s): t(3N) - t(N) is within start-up noise; raise --images"
            )

    if args.cost:
        measured = {"cores": worker_cores(), "gpus": gpus, "model_device": device}
        machines = []
        for spec in args.cost:
            try:
                machines += parse_cost(
                    spec,
                    args.cores if args.cores is not None else measured["cores"],
                    args.gpus if args.gpus is not None else gpus,
                )
            except (OSError, ValueError, TypeError, AttributeError, KeyError) as error:
                parser.error(f"--cost {spec}: {error}")
        report["cost"] = cost_rows(report, machines, measured)

    report["workdir"] = str(workdir)
    report["benchmark_seconds"] = _round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
