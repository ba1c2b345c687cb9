"""GPU JPEG decoding with NVIDIA nvImageCodec, resized on the GPU the way ``load_image`` does.

``GpuJpegDecoder.decode_batch`` takes a batch of raw file bytes and returns, per item,
either a ``DecodedImage`` (model-ready ``size`` x ``size`` x 3 uint8 pixels plus the
original width and height) or ``None``, meaning "decode this one with Pillow": the
probe (``jpeg_probe``) found it not GPU-friendly, or nvImageCodec could not decode it.
Errors rows therefore keep coming from one place, ``load_image``::

    gpu = GpuJpegDecoder()                      # once per worker; GpuDecodeUnavailable if not
    decoded = gpu.decode_batch(raw_bytes, size)
    for index, item in enumerate(decoded):
        if item is None:
            item = load_image(raw_bytes[index], size, max_pixels)  # may raise ImageDecodeError

What matches ``load_image`` (see ``resize_like_pillow``): colour (sRGB from YCbCr, with
nvJPEG's "fancy" chroma upsampling like libjpeg's), no EXIF rotation (rotated files never
reach the GPU), the same squash to a square (no crop), the same two-step geometry (Pillow
decodes a large JPEG at 1/2, 1/4 or 1/8 scale through ``draft()``, then resizes with an
antialiased bilinear filter; here a box filter over the same blocks, then Keras's
antialiased bilinear resize). Pixels differ by rounding and by the DCT-domain scaling
that a box filter only approximates; ``benchmarks/gpu_decode.py`` measures by how much.

``decode_device_available`` and ``resolve_decode_device`` answer ``--decode-device
auto|cpu|gpu`` cheaply: they neither import nvImageCodec nor create a CUDA context (a
parent process that touched CUDA must not fork workers that use it).
"""

from __future__ import annotations

import ctypes
import importlib.util
import io
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from captioning.errors import UserError
from captioning.images.decode import DecodedImage
from captioning.images.jpeg_probe import DEFAULT_MAX_PIXELS, probe_jpeg

DECODE_DEVICES = ("auto", "cpu", "gpu")

# nvImageCodec backends by the names this module takes. nvJPEG's CUDA decoder registers
# as HYBRID_CPU_GPU (Huffman on CPU threads for small images, on the GPU for large ones),
# its hardware engine (A100/H100 NVJPG) as HW_GPU_ONLY; GPU_ONLY has no JPEG decoder at
# all. "cpu" (libjpeg-turbo inside nvImageCodec) exists only to smoke-test this code path
# on a machine without a GPU; production never asks for it, so that a file the GPU cannot
# decode goes to Pillow and not to a second, different CPU decoder.
_BACKENDS = {
    "hw": "HW_GPU_ONLY",
    "hybrid": "HYBRID_CPU_GPU",
    "gpu": "GPU_ONLY",
    "cpu": "CPU_ONLY",
}
DEFAULT_BACKENDS = ("hw", "hybrid")

# Keras backends that _to_backend_tensor can hand a decoded GPU image to.
_DLPACK_BACKENDS = ("jax", "tensorflow", "torch")

# Pixels per resize call: bounds GPU memory (float32 copies of a chunk of same-sized
# images) to about 1 GB, whatever the photos' size.
_CHUNK_PIXELS = 1 << 26


class GpuDecodeUnavailable(RuntimeError):
    """nvImageCodec, nvJPEG, a CUDA device or a DLPack-capable Keras backend is missing."""


# === Which device decodes ===
def _visible_cuda_devices() -> int:
    """How many GPUs NVML sees, honouring an empty CUDA_VISIBLE_DEVICES; 0 on any failure.

    NVML (the driver's management library) answers without creating a CUDA context,
    unlike cuInit or importing a framework.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return 0
    try:
        if nvml.nvmlInit_v2() != 0:
            return 0
        try:
            count = ctypes.c_uint(0)
            return count.value if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else 0
        finally:
            nvml.nvmlShutdown()
    except (AttributeError, OSError):
        return 0


def _nvimgcodec_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except (ImportError, ValueError):  # no "nvidia" namespace package at all
        return False


def _unavailable_reason() -> str | None:
    if not _nvimgcodec_installed():
        return "nvImageCodec is not installed (pip install 'nvidia-nvimgcodec-cu12[nvjpeg]')"
    if _visible_cuda_devices() == 0:
        return "no CUDA GPU is visible"
    return None


def decode_device_available() -> bool:
    """Whether nvImageCodec is importable and a CUDA device is visible (a cheap check).

    ``GpuJpegDecoder()`` is the definitive one: it also needs nvJPEG, a driver new
    enough for the wheel's CUDA, and a Keras backend that takes DLPack tensors.
    """
    return _unavailable_reason() is None


def resolve_decode_device(choice: str) -> str:
    """``--decode-device`` -> "cpu" or "gpu": auto picks gpu when available."""
    if choice not in DECODE_DEVICES:
        choices = ", ".join(DECODE_DEVICES)
        raise UserError(f"--decode-device must be one of {choices}, not {choice!r}")
    if choice == "cpu":
        return "cpu"
    reason = _unavailable_reason()
    if choice == "gpu" and reason is not None:
        raise UserError(f"--decode-device gpu: {reason}; use --decode-device auto or cpu")
    return "gpu" if reason is None else "cpu"


# === Geometry shared with load_image ===
def draft_scale(width: int, height: int, size: int) -> int:
    """The DCT scale Pillow's ``JpegImageFile.draft`` picks for a ``size`` square: 1, 2, 4, 8."""
    ratio = min(width // size, height // size)
    return next((scale for scale in (8, 4, 2) if ratio >= scale), 1)


def _box_reduce(images: Any, scale: int) -> Any:
    """Mean over ``scale`` x ``scale`` blocks of [N, H, W, C] floats -> ceil(H/s) x ceil(W/s).

    Stands in for libjpeg's DCT scaling (at 1/8 it *is* the block mean). A partial block
    at the right or bottom edge is completed by repeating the last column or row, as
    JPEG encoders pad a partial MCU, so it averages like the decoder's scaled block.
    """
    from keras import ops

    _, height, width, channels = images.shape
    pad_h, pad_w = -height % scale, -width % scale
    if pad_h:
        images = ops.concatenate([images, ops.repeat(images[:, -1:], pad_h, axis=1)], axis=1)
    if pad_w:
        images = ops.concatenate([images, ops.repeat(images[:, :, -1:], pad_w, axis=2)], axis=2)
    rows, cols = (height + pad_h) // scale, (width + pad_w) // scale
    blocks = ops.reshape(images, (-1, rows, scale, cols, scale, channels))
    return ops.mean(blocks, axis=(2, 4))


def resize_like_pillow(images: Any, scale: int, size: int) -> Any:
    """[N, H, W, 3] full-size decodes -> [N, size, size, 3] uint8, as ``load_image`` does.

    ``load_image`` = ``draft()`` (decode at 1/``scale``), then ``Image.resize`` to a
    square with BILINEAR, which Pillow antialiases when shrinking (its triangle filter
    widens by the scale factor), and which squashes rather than crops. Keras's
    ``image.resize(antialias=True)`` is that same widened triangle filter on every
    backend (jax.image.resize / tf.image.resize). Left out: Pillow's ``reducing_gap=3.0``
    box pre-reduction, which only acts when a side is still 6x the target after draft()
    (huge or very elongated photos), and which Pillow documents as "indistinguishable
    from fair resampling in most cases", i.e. from what this computes.
    """
    from keras import ops

    pixels = ops.cast(images, "float32")
    if scale > 1:
        pixels = _box_reduce(pixels, scale)
    if tuple(pixels.shape[1:3]) != (size, size):  # Pillow skips resize() when sizes match
        pixels = ops.image.resize(
            pixels,
            (size, size),
            interpolation="bilinear",
            antialias=True,
            data_format="channels_last",
        )
    # Round half up like Pillow's fixed-point resampler, then back to bytes.
    return ops.cast(ops.clip(ops.floor(pixels + 0.5), 0.0, 255.0), "uint8")


def _power_of_two_chunks(count: int, limit: int) -> list[int]:
    """Split ``count`` into powers of two <= ``limit``, largest first (23 -> 16, 4, 2, 1).

    JAX compiles each op once per input shape; batch sizes that are powers of two keep
    the shapes per image size to a handful instead of one per group size.
    """
    limit = 1 << (max(1, limit).bit_length() - 1)
    chunks = []
    while count:
        chunk = min(limit, 1 << (count.bit_length() - 1))
        chunks.append(chunk)
        count -= chunk
    return chunks


# === Decoder ===
def _to_backend_tensor(image: Any, on_host: bool) -> Any:
    """One decoded nvImageCodec image -> a tensor of the active Keras backend.

    Why a switch: Keras 3 has no ``ops.from_dlpack``, and each backend imports a DLPack
    tensor its own way. ``jax.numpy.from_dlpack`` takes the object and passes its CUDA
    stream to ``__dlpack__`` (nvImageCodec then makes that stream wait for the decode);
    TensorFlow only takes a capsule. Device memory is shared, not copied. Host images
    (the "cpu" smoke-test backend) go through numpy: nvImageCodec's ``__dlpack__`` needs
    a CUDA runtime even for host memory.
    """
    import keras

    if on_host:
        return keras.ops.convert_to_tensor(np.asarray(image))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.from_dlpack(image)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.experimental.dlpack.from_dlpack(image.__dlpack__())
    if backend == "torch":
        import torch

        return torch.from_dlpack(image)
    raise GpuDecodeUnavailable(f"the {backend!r} Keras backend cannot take a DLPack tensor")


def _tiny_jpeg() -> bytes:
    """A 64x48 baseline JPEG for the start-up self-test."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class GpuJpegDecoder:
    """Batch-decodes GPU-friendly JPEGs with nvImageCodec and resizes them on the GPU.

    Construct once per worker (it loads nvJPEG and allocates GPU buffers); raises
    ``GpuDecodeUnavailable`` when that cannot work, so that the caller can fall back to
    Pillow for everything. ``stats`` counts, over this decoder's life, how many items went
    where: "gpu", "probe:<reason>" (sent to Pillow by the probe), "decoder_none" (probed
    friendly, nvImageCodec refused), "resize_error".
    """

    def __init__(
        self,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        backends: Sequence[str] = DEFAULT_BACKENDS,
        fancy_upsampling: bool = True,
        device_id: int = -1,
        max_num_cpu_threads: int = 0,
    ) -> None:
        unknown = set(backends) - set(_BACKENDS)
        if unknown or not backends:
            raise ValueError(f"backends must be some of {sorted(_BACKENDS)}, not {backends}")
        # nvImageCodec logs a warning for every image it cannot decode; those are routed
        # to Pillow and counted in `stats`, so only errors are worth the log by default.
        os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "1")
        try:
            from nvidia import nvimgcodec
        except ImportError as error:
            raise GpuDecodeUnavailable(
                "nvImageCodec is not installed (pip install 'nvidia-nvimgcodec-cu12[nvjpeg]')"
            ) from error
        cpu_only = set(backends) == {"cpu"}
        if not cpu_only and _visible_cuda_devices() == 0:
            raise GpuDecodeUnavailable("no CUDA GPU is visible")
        try:
            import keras  # the resize runs on Keras's backend
        except ImportError as error:
            raise GpuDecodeUnavailable(f"Keras cannot be imported: {error}") from error
        if not cpu_only and keras.backend.backend() not in _DLPACK_BACKENDS:
            raise GpuDecodeUnavailable(
                f"the {keras.backend.backend()!r} Keras backend cannot take DLPack tensors"
            )
        self._nvimgcodec = nvimgcodec
        self.max_pixels = max_pixels
        self.stats: Counter[str] = Counter()
        self._last_error: Exception | None = None
        try:
            self._decoder = nvimgcodec.Decoder(
                # A CPU-only decoder must not touch CUDA (it fails without a driver).
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY if cpu_only else device_id,
                max_num_cpu_threads=max_num_cpu_threads,
                backends=[
                    nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, _BACKENDS[name]))
                    for name in backends
                ],
                # libjpeg (so Pillow) interpolates subsampled chroma ("fancy upsampling");
                # nvImageCodec <= 0.8 turned it off by default, 0.9 leaves nvJPEG's default.
                options=f":fancy_upsampling={int(fancy_upsampling)}",
            )
            # ColorSpec.SRGB since 0.6 (RGB before): interleaved RGB, grey replicated.
            srgb = getattr(nvimgcodec.ColorSpec, "SRGB", None) or nvimgcodec.ColorSpec.RGB
            # Only orientation-1 files get here; never rotate, whatever the decoder parses.
            self._params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=srgb)
            self._host_kind = nvimgcodec.ImageBufferKind.STRIDED_HOST
        except Exception as error:  # any start-up failure means "use Pillow"
            raise GpuDecodeUnavailable(f"nvImageCodec cannot decode here: {error}") from error
        # Self-test, end to end: the wheel imports without nvJPEG and then decodes nothing,
        # and a CPU-only JAX cannot take a CUDA tensor; either would send every image to
        # Pillow one by one, so say it once, here.
        if self.decode_batch([_tiny_jpeg()], 16)[0] is None:
            why = (
                f"the GPU resize failed: {self._last_error}"
                if self.stats["resize_error"]
                else "is nvJPEG installed? (pip install 'nvidia-nvimgcodec-cu12[nvjpeg]')"
            )
            raise GpuDecodeUnavailable(f"nvImageCodec decoded no JPEG: {why}")
        self.stats.clear()

    def decode_batch(
        self, items: Sequence[bytes], size: int, *, to_numpy: bool = True
    ) -> list[DecodedImage | None]:
        """Decode and resize ``items``; ``None`` where Pillow must decode instead.

        The friendly items are decoded in one nvImageCodec batch call into GPU memory,
        then resized in groups of equal size. With ``to_numpy`` the pixels are numpy
        uint8 [size, size, 3]; without, tensors of the Keras backend on the GPU (views
        of one [n, size, size, 3] tensor per group), for a model that runs there.
        ``width``/``height`` are the file's, as ``load_image`` reports them.
        """
        results: list[DecodedImage | None] = [None] * len(items)
        nvimgcodec = self._nvimgcodec
        indices, streams, shapes = [], [], []
        for index, data in enumerate(items):
            probe = probe_jpeg(data, self.max_pixels)
            if not probe.friendly:
                self.stats[f"probe:{probe.reason}"] += 1
                continue
            try:
                streams.append(nvimgcodec.CodeStream(bytes(data)))
                indices.append(index)
                shapes.append((probe.height, probe.width, 3))
            except Exception:  # noqa: BLE001 - its parser refused: Pillow decides
                self.stats["decoder_none"] += 1
        if not streams:
            return results
        try:
            decoded = self._decoder.decode(streams, params=self._params)
        except Exception:  # noqa: BLE001 - a failed batch call: all of it goes to Pillow
            decoded = [None] * len(streams)
        if len(decoded) != len(streams):  # never seen; would misalign results with items
            decoded = [None] * len(streams)
        groups: dict[tuple[int, int], list[tuple[int, Any]]] = {}
        for index, shape, image in zip(indices, shapes, decoded, strict=True):
            # The shape check guards against a decoder that oriented or cropped anyway.
            if image is None or tuple(image.shape) != shape:
                self.stats["decoder_none"] += 1
                continue
            groups.setdefault(tuple(image.shape[:2]), []).append((index, image))
        for (height, width), members in groups.items():
            scale = draft_scale(width, height, size)
            limit = _CHUNK_PIXELS // (height * width)
            start = 0
            for count in _power_of_two_chunks(len(members), limit):
                chunk = members[start : start + count]
                start += count
                self._resize_chunk(chunk, width, height, scale, size, to_numpy, results)
        return results

    def _resize_chunk(
        self,
        chunk: list[tuple[int, Any]],
        width: int,
        height: int,
        scale: int,
        size: int,
        to_numpy: bool,
        results: list[DecodedImage | None],
    ) -> None:
        from keras import ops

        try:
            # Cast before stacking: float32 is what the resize computes in anyway, and
            # not every backend has GPU kernels for stacking uint8 tensors.
            tensors = [
                ops.cast(_to_backend_tensor(image, image.buffer_kind == self._host_kind), "float32")
                for _, image in chunk
            ]
            pixels = resize_like_pillow(ops.stack(tensors), scale, size)
            if to_numpy:
                pixels = ops.convert_to_numpy(pixels)
        except Exception as error:  # noqa: BLE001 - e.g. out of GPU memory: these go to Pillow
            self.stats["resize_error"] += len(chunk)
            self._last_error = error
            return
        for position, (index, _) in enumerate(chunk):
            results[index] = DecodedImage(pixels=pixels[position], width=width, height=height)
        self.stats["gpu"] += len(chunk)
