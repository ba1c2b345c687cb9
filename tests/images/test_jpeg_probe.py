"""The GPU-friendliness probe on real files, and the cheap --decode-device resolution.

Every file is made with Pillow here. A friendly verdict is a promise that Pillow would
decode the file the same way (no rotation, no error), so each friendly file is also
checked against ``load_image``; each "too large" one against its ImageTooLarge error.
"""

import inspect
import io
import random

import pytest
from PIL import Image

from captioning.errors import UserError
from captioning.images import gpu_decode
from captioning.images.decode import ImageDecodeError, load_image
from captioning.images.gpu_decode import draft_scale, resolve_decode_device
from captioning.images.jpeg_probe import DEFAULT_MAX_PIXELS, gpu_friendly_jpeg, probe_jpeg
from tests.images import awkward_files


def _jpeg(image: Image.Image | None = None, **kwargs) -> bytes:
    buffer = io.BytesIO()
    (image or awkward_files.scene_like(160, 120)).save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its SOF0 header claiming ``width`` x ``height``."""
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[sof + 9 :]


FRIENDLY = {
    "baseline": lambda: _jpeg(),
    "baseline_444": lambda: _jpeg(subsampling=0),
    "baseline_422": lambda: _jpeg(subsampling=1),
    "grayscale": lambda: _jpeg(awkward_files.scene_like(160, 120).convert("L")),
    "exif_orientation_1": lambda: _jpeg(exif=_exif(1)),
    "odd_size": lambda: _jpeg(awkward_files.scene_like(161, 77)),
    "awkward_jpeg": awkward_files.jpeg,
}
NOT_FRIENDLY = {
    "progressive": (lambda: _jpeg(progressive=True), "progressive"),
    "cmyk": (awkward_files.cmyk_jpeg, "cmyk"),
    "exif_orientation_6": (awkward_files.exif_rotated_jpeg, "exif_orientation"),
    "exif_orientation_3": (lambda: _jpeg(exif=_exif(3)), "exif_orientation"),
    "xmp_orientation_8": (
        lambda: _jpeg(xmp=b'<rdf:Description tiff:Orientation="8"/>'),
        "exif_orientation",
    ),
    "rgb_coded": (lambda: _jpeg(keep_rgb=True), "rgb_jpeg"),
    "png": (awkward_files.png, "not_jpeg"),
    "gif": (awkward_files.animated_gif, "not_jpeg"),
    "html": (awkward_files.html_as_jpg, "not_jpeg"),
    "truncated": (awkward_files.truncated_jpeg, "truncated"),
    "headers_only": (lambda: _jpeg()[:300], "truncated"),
    "empty": (lambda: b"", "empty"),
    "oversize_header": (lambda: _with_size(_jpeg(), 60_000, 60_000), "too_large"),
    "zero_height": (lambda: _with_size(_jpeg(), 160, 0), "no_pixels"),
}


@pytest.mark.parametrize("name", sorted(FRIENDLY))
def test_friendly_jpegs_are_the_ones_pillow_decodes_unrotated(name):
    data = FRIENDLY[name]()
    probe = probe_jpeg(data)
    assert probe.friendly and probe.reason == "ok" and gpu_friendly_jpeg(data)
    decoded = load_image(data, 64)
    assert (probe.width, probe.height) == (decoded.width, decoded.height)
    assert probe.components in (1, 3)


@pytest.mark.parametrize("name", sorted(NOT_FRIENDLY))
def test_other_files_go_to_pillow_with_a_reason(name):
    make, reason = NOT_FRIENDLY[name]
    probe = probe_jpeg(make())
    assert not probe.friendly and not gpu_friendly_jpeg(make())
    assert probe.reason == reason


def test_an_mpo_goes_to_pillow():
    buffer = io.BytesIO()
    frame = awkward_files.scene_like(160, 120)
    frame.save(buffer, "MPO", save_all=True, append_images=[frame])
    assert probe_jpeg(buffer.getvalue()).reason == "mpo"


def test_the_pixel_limit_agrees_with_load_image():
    assert inspect.signature(load_image).parameters["max_pixels"].default == DEFAULT_MAX_PIXELS
    data = _jpeg()  # 160 x 120 = 19,200 pixels
    assert gpu_friendly_jpeg(data, max_pixels=19_200)
    assert probe_jpeg(data, max_pixels=19_199).reason == "too_large"
    with pytest.raises(ImageDecodeError) as raised:
        load_image(data, 64, max_pixels=19_199)
    assert raised.value.error_type == "ImageTooLarge"
    with pytest.raises(ImageDecodeError) as raised:
        load_image(NOT_FRIENDLY["oversize_header"][0](), 64)
    assert raised.value.error_type == "ImageTooLarge"


def test_garbage_never_raises_and_is_never_friendly():
    rng = random.Random(5)
    original = _jpeg()
    samples = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))) for _ in range(50)]
    samples += [b"\xff\xd8" + sample for sample in samples]  # a JPEG signature, then noise
    samples += [original[:cut] for cut in range(0, len(original) - 2, 7)]  # every truncation
    for sample in samples:
        assert not probe_jpeg(sample).friendly, sample[:20]
    # Flipped bytes in the headers: any verdict, but never an exception.
    header_end = original.index(b"\xff\xda") + 14
    for _ in range(300):
        mutated = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(header_end)] = rng.getrandbits(8)
        probe_jpeg(bytes(mutated))


def test_broken_exif_goes_to_pillow():
    good = _jpeg(exif=_exif(1))
    start = good.index(b"Exif\x00\x00") + 6
    wrong_byte_order = good[:start] + b"XX" + good[start + 2 :]
    assert probe_jpeg(wrong_byte_order).reason == "bad_exif"
    far_ifd = good[:start] + good[start : start + 4] + b"\xff\xff\xff\x00" + good[start + 8 :]
    assert probe_jpeg(far_ifd).reason == "bad_exif"


def test_draft_scale_is_pillows():
    for width, height in ((4032, 3024), (1000, 700), (640, 480), (300, 2400), (100, 80)):
        data = _jpeg(Image.new("RGB", (width, height)))
        image = Image.open(io.BytesIO(data))
        image.draft(image.mode, (75, 75))
        scale = draft_scale(width, height, 75)
        assert image.size == (-(-width // scale), -(-height // scale)), (width, height)


@pytest.fixture
def without_gpu(monkeypatch):
    monkeypatch.setattr(gpu_decode, "_unavailable_reason", lambda: "no CUDA GPU is visible")


def test_decode_device_resolution_without_a_gpu(without_gpu):
    assert resolve_decode_device("auto") == "cpu"
    assert resolve_decode_device("cpu") == "cpu"
    with pytest.raises(UserError, match="no CUDA GPU") as raised:
        resolve_decode_device("gpu")
    assert "\n" not in str(raised.value)
    with pytest.raises(UserError):
        resolve_decode_device("tpu")


def test_decode_device_resolution_with_a_gpu(monkeypatch):
    monkeypatch.setattr(gpu_decode, "_unavailable_reason", lambda: None)
    assert resolve_decode_device("auto") == "gpu"
    assert resolve_decode_device("gpu") == "gpu"
    assert resolve_decode_device("cpu") == "cpu"


def test_decode_device_resolution_on_this_machine():
    available = gpu_decode.decode_device_available()
    assert resolve_decode_device("auto") == ("gpu" if available else "cpu")
    if not available:
        with pytest.raises(UserError):
            resolve_decode_device("gpu")


def test_the_gpu_decoder_says_clearly_when_it_cannot_start(monkeypatch):
    # No GPU visible, on any machine (this one may have one): the decoder refuses to start.
    monkeypatch.setattr(gpu_decode, "_visible_cuda_devices", lambda: 0)
    with pytest.raises(gpu_decode.GpuDecodeUnavailable) as raised:
        gpu_decode.GpuJpegDecoder()
    assert isinstance(raised.value, RuntimeError) and str(raised.value)


def test_power_of_two_chunks():
    assert gpu_decode._power_of_two_chunks(23, 64) == [16, 4, 2, 1]
    assert gpu_decode._power_of_two_chunks(5, 3) == [2, 2, 1]
    assert gpu_decode._power_of_two_chunks(3, 0) == [1, 1, 1]
    assert sum(gpu_decode._power_of_two_chunks(64, 64)) == 64
