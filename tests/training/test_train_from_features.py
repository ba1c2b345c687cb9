"""``captioning train --features`` against training from images with the same frozen backbone.

One features run (random-init backbone, as offline) feeds a training run; a second
training run reads the images and computes its own feature cache from the same
backbone. Same seed, same split, same precision: the validation losses agree, and
both bundles caption alike, because the bundle trained from features carries the
backbone that computed them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline

from captioning import run_layout
from captioning.bundle import load_bundle
from captioning.cli.main import main
from captioning.data.formats import read_captions
from captioning.images.decode import load_image
from captioning.models.image_encoder import build_inception_backbone
from captioning.presets import tiny
from captioning.training.feature_spec import read_spec
from captioning.training.trainer import train
from pipelines.feature_pipeline import run as run_features
from tests.pipelines.test_feature_pipeline import BROKEN, read_records
from tests.pipelines.test_feature_pipeline import make_dataset as make_scenes


def full_backbone_file(cut_weights: str, out: Path) -> str:
    """A whole-InceptionV3 weights file whose layers up to the cut are ``cut_weights``
    (the features job's random draw): how the images run gets the same backbone."""
    base = build_inception_backbone(75, "mixed10", None)
    keras.Model(base.input, base.get_layer("mixed0").output).load_weights(cut_weights)
    base.save_weights(out)
    return str(out)


def test_training_from_features_matches_training_from_images(tmp_path, capsys):
    # No listed-but-missing image here: with it, training without --images would split
    # a different image set into train/val than training with --images.
    scenes = make_scenes(tmp_path / "scenes")
    captions_file = scenes / "captions.csv"
    lines = captions_file.read_text().splitlines()
    captions_file.write_text("\n".join(line for line in lines if "missing" not in line) + "\n")
    captions, images = str(captions_file), str(scenes / "images")
    output = str(tmp_path / "features")
    argv = ["--captions", captions, "--images", images, "--output", output]
    run_features(
        [*argv, "--preset", "tiny", "--precision", "float32"], test_pipeline=TestPipeline()
    )

    # One step per epoch (the whole training split in one batch), so the order in which
    # each path streams its examples (shard order vs. caption order) cannot matter.
    split = read_captions(captions, images, seed=0, val_fraction=0.2)
    train_images = [name for name in split.images("train") if name != BROKEN]
    config = tiny()
    frozen = dataclasses.replace(
        config.captioner.encoder,
        trainable=False,
        backbone_weights=full_backbone_file(
            run_layout.backbone_path(output, read_spec(output).run_id), tmp_path / "full.weights.h5"
        ),
    )
    config = dataclasses.replace(
        config,
        captioner=dataclasses.replace(config.captioner, encoder=frozen),
        batch_size=len(train_images),
        epochs=2,
        precision="float32",
    )

    # The same seed before each run: the decoder starts from the same random weights.
    keras.utils.set_random_seed(3)
    from_images = train(captions, images, str(tmp_path / "from_images"), config)
    keras.utils.set_random_seed(3)
    argv = ["train", "--captions", captions, "--out", str(tmp_path / "from_features")]
    argv += ["--features", output, "--preset", "tiny", "--epochs", "2", "--precision", "float32"]
    assert main([*argv, "--batch-size", str(len(train_images))]) == 0
    from_features = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    # Same features (float16 on both paths, measured bit-identical), same batches, same
    # initial weights: what is left is float summation order, far below 1e-4 relative.
    expected = from_images.history["val_loss"]
    assert len(expected) == 2
    np.testing.assert_allclose(from_features["final_val_loss"], expected[-1], rtol=1e-4)
    # And training did move the loss: the runs agree on something that changed.
    assert abs(expected[-1] - expected[0]) > 1e-4

    # The features bundle holds the backbone that computed the features...
    bundle_images = load_bundle(from_images.bundle, precision="float32")
    bundle_features = load_bundle(str(tmp_path / "from_features"), precision="float32")
    records = read_records(output)
    names = sorted(records)
    pixels = np.stack(
        [load_image((scenes / "images" / name).read_bytes(), 75, 10**8).pixels for name in names]
    )
    grid = np.asarray(bundle_features.captioner.encoder.backbone_features(pixels))
    for name, values in zip(names, grid, strict=True):
        np.testing.assert_allclose(values, records[name].astype(np.float32), atol=1e-3)
    # ...so it captions images as the bundle trained from them does.
    a = bundle_images.captioner.generate(pixels, beam_width=1)
    b = bundle_features.captioner.generate(pixels, beam_width=1)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
