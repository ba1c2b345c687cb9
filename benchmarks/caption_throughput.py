"""Caption throughput benchmark: what the hardware allows, and what the pipeline gets.

    python benchmarks/caption_throughput.py                        # ~8 minutes on 2 cores
    python benchmarks/caption_throughput.py --bundle B --agreement-bundle demo/bundle

Prints one JSON object with, all measured in this run:
- ``reference_fp32_images_per_s``: plain Keras InceptionV3(include_top=False,
  weights=None) at 299 px, batch 32, float32: the anchor every ratio uses;
- ``encoder_images_per_s``: our encoder (backbone + projection) per precision;
- ``generation_ms_per_image``: greedy and beam-3 decoding from cached features;
- ``end_to_end``: ``captioning caption`` (DirectRunner, JPEG bytes -> Parquet) on N and
  3N photo-like JPEGs (~500x375), with the marginal rate 2N / (t(3N) - t(N)) so that
  start-up cost drops out, its ratio to the fp32 reference, and peak worker RSS;
- ``training_steps_per_s``: on cached features, 1 replica vs 2 logical-CPU replicas;
- ``precision_agreement``: captions of 300 synthetic scenes in bf16 vs fp32.

Without ``--bundle`` it builds a production-shaped one first: 299 px InceptionV3
(random init: ImageNet weights cannot be downloaded here), the production decoder,
a 5,000-word vocabulary (Flickr8k's words plus the scenes'), beam width 3, with the
decoder trained briefly on synthetic scenes so that captions end like real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from captioning import run_layout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = ROOT.parent / "shared" / "data" / "flickr8k" / "Flickr8k.token.txt"


# === Inputs ===
def photo_like_jpegs(directory: Path, count: int, seed: int) -> list[Path]:
    """~500x375 JPEGs with gradients, texture and shapes: decode cost like real photos."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        width, height = rng.choice([(500, 375), (375, 500), (500, 333), (480, 360)])
        base = np.linspace(rng.randint(0, 120), rng.randint(120, 255), width, dtype=np.float32)
        pixels = np.stack([np.tile(base, (height, 1))] * 3, -1)
        pixels += np.random.default_rng(seed * 100_003 + index).normal(0, 18, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 8)):
            x, y, r = rng.randint(0, width), rng.randint(0, height), rng.randint(10, 120)
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        image = image.filter(ImageFilter.GaussianBlur(1.2))
        path = directory / f"photo_{seed}_{index:05d}.jpg"
        image.save(path, quality=88)
        paths.append(path)
    return paths


# === Bundle ===
def build_production_bundle(workdir: Path) -> str:
    """Production shapes, decoder trained for a few epochs on cached scene features."""
    import dataclasses

    from captioning.bundle import save_bundle
    from captioning.data.formats import read_captions
    from captioning.data.synthetic_scenes import generate_scenes
    from captioning.presets import production
    from captioning.text.vocabulary import Vocabulary
    from captioning.training.example_cache import build_cache
    from captioning.training.input_pipeline import caption_batches, encode_captions
    from captioning.training.trainer import build_captioner, compile_captioner

    scenes = workdir / "train_scenes"
    generate_scenes(scenes, count=600, seed=1)
    data = read_captions(scenes / "captions.csv", scenes / "images")
    words = [r.caption for r in data.records]
    if FLICKR8K.is_file():
        words += [r.caption for r in read_captions(FLICKR8K).records]
    config = production()
    encoder = dataclasses.replace(config.captioner.encoder, backbone_weights=None)
    config = dataclasses.replace(
        config,
        captioner=dataclasses.replace(config.captioner, encoder=encoder),
        epochs=6,
        batch_size=32,
    )
    vocabulary = Vocabulary.build(words, max_words=5000, max_caption_words=24)
    model = build_captioner(config.captioner, vocabulary)
    names = data.images()
    cache = build_cache(
        "features",
        scenes / "images",
        names,
        config.captioner,
        workdir / "cache",
        encode=lambda batch: model.encoder.backbone_features(batch),
    )
    tokens, counts = encode_captions(data.captions_by_image(), cache.images, vocabulary)
    batches = caption_batches(
        cache.dataset(), tokens, counts, 32, training=True, inputs_key="features"
    )
    steps = len(cache.images) // 32
    compile_captioner(model, config, steps)
    model.fit(batches, epochs=config.epochs, steps_per_epoch=steps, verbose=0)
    out = workdir / "bundle"
    save_bundle(model, vocabulary, config.captioner, str(out))
    return str(out)


# === Measurements ===
def _rate(function, batch, repeats: int) -> float:
    function(batch)  # trace / warm up
    started = time.perf_counter()
    for _ in range(repeats):
        function(batch)
    return repeats * len(batch) / (time.perf_counter() - started)


def reference_forward_rate(batch_size: int = 32, repeats: int = 6) -> float:
    import keras
    import tensorflow as tf

    model = keras.applications.InceptionV3(include_top=False, weights=None)
    images = np.random.default_rng(0).uniform(-1, 1, (batch_size, 299, 299, 3)).astype("float32")
    forward = tf.function(lambda x: model(x, training=False))
    return _rate(forward, tf.constant(images), repeats)


def encoder_rates(bundle: str, batch_size: int, repeats: int) -> dict[str, float]:
    import tensorflow as tf

    from captioning.bundle import load_bundle

    images = tf.constant(
        np.random.default_rng(1).integers(0, 255, (batch_size, 299, 299, 3), dtype=np.uint8)
    )
    rates = {}
    for precision in ("float32", "mixed_bfloat16"):
        encoder = load_bundle(bundle, precision=precision).captioner.encoder
        forward = tf.function(lambda x, e=encoder: e(x, training=False))
        rates[precision] = round(_rate(forward, images, repeats), 2)
    return rates


def generation_costs(bundle: str, batch_size: int = 64) -> dict[str, float]:
    from captioning.bundle import load_bundle

    loaded = load_bundle(bundle)
    features = (
        np.random.default_rng(2)
        .normal(0, 1, (batch_size, 64, loaded.captioner.encoder.backbone_channels))
        .astype("float32")
    )
    costs = {}
    for name, width in (("greedy", 1), ("beam3", 3)):
        run = lambda f, w=width: loaded.captioner.generate(features=f, beam_width=w)  # noqa: E731
        costs[name] = round(1000.0 / _rate(run, features, 3), 3)
    return costs


def caption_run(bundle: str, pattern: str, output: Path, extra: list[str]) -> dict:
    """One ``captioning caption`` process; wall time and its peak RSS (a wrapper reads
    RUSAGE_CHILDREN, so only that process tree is measured)."""
    command = [
        sys.executable,
        "-m",
        "captioning.cli.main",
        "caption",
        "--input",
        pattern,
        "--output",
        str(output),
        "--model",
        bundle,
        *extra,
    ]
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(json.dumps({'code': code, 'seconds': time.perf_counter() - t, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["code"] != 0:
        raise RuntimeError(f"caption run failed: {result.stderr[-2000:]}")
    summary = json.loads(Path(run_layout.summary_path(str(output))).read_text())
    measured["captioned"] = summary["captioned"]
    return measured


def end_to_end(bundle: str, workdir: Path, count: int, extra: list[str]) -> dict:
    small = workdir / "photos_n"
    large = workdir / "photos_3n"
    photo_like_jpegs(small, count, seed=5)
    photo_like_jpegs(large, 3 * count, seed=6)
    one = caption_run(bundle, str(small / "*.jpg"), workdir / "out_n" / "captions", extra)
    three = caption_run(bundle, str(large / "*.jpg"), workdir / "out_3n" / "captions", extra)
    assert one["captioned"] == count and three["captioned"] == 3 * count
    marginal = 2 * count / (three["seconds"] - one["seconds"])
    return {
        "images": [count, 3 * count],
        "seconds": [round(one["seconds"], 2), round(three["seconds"], 2)],
        "marginal_images_per_s": round(marginal, 2),
        "peak_rss_mb": [round(one["peak_rss_mb"]), round(three["peak_rss_mb"])],
        "flags": extra,
    }


TRAIN_STEPS = """
import json, sys, time
import numpy as np
from captioning.training.strategy import split_cpu
replicas = int(sys.argv[1]); split_cpu(2)
import keras, tensorflow as tf
from captioning.presets import production
from captioning.text.vocabulary import Vocabulary
from captioning.training.input_pipeline import to_model_inputs
from captioning.training.trainer import build_captioner, compile_captioner
config = production()
vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(4996)], 22)
devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
strategy = tf.distribute.MirroredStrategy(devices=devices)
rng = np.random.default_rng(0)
features = rng.normal(0, 1, (256, 64, 2048)).astype("float32")
tokens = rng.integers(4, 5000, (256, 22)).astype("int32")
with strategy.scope():
    import dataclasses
    encoder = dataclasses.replace(config.captioner.encoder, backbone_weights=None)
    captioner = dataclasses.replace(config.captioner, encoder=encoder)
    model = build_captioner(captioner, vocabulary)
    compile_captioner(model, config)
data = tf.data.Dataset.from_tensor_slices((features, tokens)).batch(64, drop_remainder=True)
data = data.map(to_model_inputs("features")).repeat()
model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
started = time.perf_counter(); model.fit(data, epochs=1, steps_per_epoch=8, verbose=0)
print(json.dumps({"steps_per_s": 8 / (time.perf_counter() - started)}))
"""


def training_rates() -> dict[str, float]:
    rates = {}
    for replicas in (1, 2):
        result = subprocess.run(
            [sys.executable, "-c", TRAIN_STEPS, str(replicas)],
            capture_output=True,
            text=True,
            check=True,
        )
        rates[f"replicas_{replicas}"] = round(
            json.loads(result.stdout.strip().splitlines()[-1])["steps_per_s"], 3
        )
    return rates


def precision_agreement(bundle: str, workdir: Path) -> dict:
    from captioning.data.synthetic_scenes import generate_scenes
    from captioning.evaluation.evaluate import evaluate_bundle

    scenes = workdir / "agreement_scenes"
    generate_scenes(scenes, count=300, seed=2)
    captions = {}
    metrics = {}
    for precision in ("float32", "mixed_bfloat16"):
        metrics[precision] = evaluate_bundle(
            bundle,
            str(scenes / "captions.csv"),
            str(scenes / "images"),
            precision=precision,
            keep_hypotheses=True,
        )
        captions[precision] = metrics[precision].pop("hypotheses")
    same = sum(captions["float32"][k] == captions["mixed_bfloat16"][k] for k in captions["float32"])
    return {
        "identical_captions": round(same / len(captions["float32"]), 4),
        "bleu4_float32": round(metrics["float32"]["bleu4"], 4),
        "bleu4_bfloat16": round(metrics["mixed_bfloat16"]["bleu4"], 4),
        "bleu4_difference": round(
            abs(metrics["float32"]["bleu4"] - metrics["mixed_bfloat16"]["bleu4"]), 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="a production-shaped bundle (built when omitted)")
    parser.add_argument("--images", type=int, default=256, help="N: end to end runs N and 3N")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    parser.add_argument("--caption-flags", default="", help="extra flags for `captioning caption`")
    parser.add_argument(
        "--agreement-bundle",
        help="bundle for the bf16-vs-fp32 caption check (default: --bundle); the demo "
        "bundle, trained end to end on scenes, is the meaningful one",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="caption-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": {"cpus": os.cpu_count()}}
    started = time.perf_counter()
    bundle = args.bundle or build_production_bundle(workdir)
    report["bundle"] = bundle
    report["reference_fp32_images_per_s"] = round(reference_forward_rate(), 2)
    if "encoder" not in args.skip:
        report["encoder_images_per_s"] = encoder_rates(bundle, 64, 6)
    if "generation" not in args.skip:
        report["generation_ms_per_image"] = generation_costs(bundle)
    if "e2e" not in args.skip:
        e2e = end_to_end(bundle, workdir, args.images, args.caption_flags.split())
        e2e["ratio_to_fp32_reference"] = round(
            e2e["marginal_images_per_s"] / report["reference_fp32_images_per_s"], 3
        )
        report["end_to_end"] = e2e
    if "training" not in args.skip:
        report["training_steps_per_s"] = training_rates()
    if "agreement" not in args.skip:
        report["precision_agreement"] = precision_agreement(
            args.agreement_bundle or bundle, workdir
        )
    report["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
