"""The features job on a real TestPipeline: every image ends in the shards or the errors
table, and the shards hold what the trainer's own feature cache would compute."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from captioning.cli.main import main
from captioning.data.formats import read_captions
from captioning.data.synthetic_scenes import generate_scenes
from captioning.errors import UserError
from captioning.images.decode import load_image
from captioning.models.captioner import Captioner
from captioning.precision import dtype_policy
from captioning.presets import tiny
from captioning.text.vocabulary import Vocabulary
from captioning.training.example_cache import build_cache
from captioning.training.feature_shards import open_feature_shards
from captioning.training.feature_spec import backbone_path, read_spec
from captioning.training.trainer import build_captioner
from pipelines.feature_pipeline import feature_config, remove_earlier_runs, run

BROKEN, MISSING = "broken.png", "missing.png"


def make_dataset(root: Path, count: int = 16, seed: int = 5) -> Path:
    """Synthetic scenes plus one undecodable image and one listed image that does not exist."""
    generate_scenes(root, count=count, seed=seed)
    (root / "images" / BROKEN).write_bytes(b"this is not a png")
    with (root / "captions.csv").open("a") as handle:
        handle.write(f"{BROKEN},a broken image\n{MISSING},a missing image\n")
    return root


def read_records(prefix: str) -> dict[str, np.ndarray]:
    spec = read_spec(prefix)
    files = sorted(tf.io.gfile.glob(f"{prefix}_features-{spec.run_id}-*.tfrecord"))
    records = {}
    for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
        example = tf.train.Example.FromString(record).features.feature
        name = example["image"].bytes_list.value[0].decode()
        values = np.frombuffer(example["features"].bytes_list.value[0], spec.feature_dtype)
        records[name] = values.reshape(spec.feature_shape)
    return records


def read_errors(prefix: str) -> list[dict]:
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + "_errors-*.parquet"))
    return [row for file in files for row in pq.read_table(file).to_pylist()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("feature_scenes"))


@pytest.fixture(scope="module")
def feature_run(dataset, tmp_path_factory) -> tuple[str, dict]:
    prefix = str(tmp_path_factory.mktemp("features") / "scenes")
    argv = [
        "--captions",
        str(dataset / "captions.csv"),
        "--images",
        str(dataset / "images"),
        "--output",
        prefix,
        "--preset",
        "tiny",
        "--precision",
        "float32",
    ]
    return prefix, run(argv, test_pipeline=TestPipeline())


def test_every_image_ends_in_the_shards_or_the_errors_table(dataset, feature_run):
    prefix, summary = feature_run
    records = read_records(prefix)
    errors = {Path(row["image_uri"]).name: row for row in read_errors(prefix)}
    names = read_captions(dataset / "captions.csv").images()
    assert len(names) == 18
    assert set(records) | set(errors) == set(names)
    assert not set(records) & set(errors)
    assert errors[BROKEN]["stage"] == "decode"
    assert errors[MISSING]["stage"] == "read"
    assert errors[MISSING]["image_uri"] == str(dataset / "images" / MISSING)

    assert summary["inputs"] == 18 and summary["features"] == 16 and summary["errors"] == 2
    assert summary["errors_by_stage"] == {"decode": 1, "read": 1}
    spec = read_spec(prefix)
    assert spec.complete and spec.counts["features"] == 16
    assert spec.feature_shape == (49, 256)  # mixed0 at 75 px: a 7x7 grid of 256 channels
    assert spec.feature_dtype == "float16" and spec.precision == "float32"
    assert (spec.image.image_size, spec.feature_layer, spec.backbone_weights) == (
        75,
        "mixed0",
        None,
    )
    index = Path(prefix).parent.glob(Path(prefix).name + f"_index-{spec.run_id}-*.txt")
    assert sorted(line for file in index for line in file.read_text().split()) == sorted(records)


def trainer_features(
    prefix: str, dataset: Path, precision: str, cache_root: Path
) -> tuple[dict[str, np.ndarray], Captioner]:
    """Features of every image from the trainer's frozen-backbone path (its model's
    ``backbone_features`` into ``build_cache``), given the backbone the job saved."""
    config, _ = feature_config("tiny", None, None)
    names = [name for name in read_captions(dataset / "captions.csv").images() if name != MISSING]
    vocabulary = Vocabulary.build(["a small red circle"], 20, 12)
    with dtype_policy(precision):
        model = build_captioner(config, vocabulary, load_backbone_weights=False)
    model.encoder.backbone.load_weights(backbone_path(prefix))
    cache = build_cache(
        "features",
        dataset / "images",
        names,
        config,
        cache_root,
        lambda batch: model.encoder.backbone_features(batch, training=False),
    )
    rows = cache.dataset().as_numpy_iterator()
    return {cache.images[row]: value for row, value in rows}, model


def assert_same_features(records: dict[str, np.ndarray], expected: dict[str, np.ndarray]):
    assert set(records) == set(expected)
    for name, values in records.items():
        # Both paths store float16 from the same computation; only the batch an image
        # shares may differ (oneDNN may then sum in another order), which can move a value
        # by a float16 step. These random-init features are below 1, where a step is
        # under 5e-4. (Measured here: bit-identical, in float32 and in bfloat16.)
        np.testing.assert_allclose(
            values.astype(np.float32), expected[name].astype(np.float32), rtol=0, atol=1e-3
        )
        assert np.mean(values == expected[name]) > 0.99, name


def test_shards_hold_what_the_trainers_own_cache_computes(dataset, feature_run, tmp_path):
    prefix, _ = feature_run
    records = read_records(prefix)
    expected, _ = trainer_features(prefix, dataset, "float32", tmp_path)
    assert_same_features(records, expected)
    # The backbone really is the saved one: a fresh random init gives other features.
    vocabulary = Vocabulary.build(["a small red circle"], 20, 12)
    fresh = build_captioner(feature_config("tiny", None, None)[0], vocabulary, False)
    sample = next(iter(records))
    pixels = np.stack([cache_pixels(dataset / "images" / sample)])
    assert not np.allclose(
        np.asarray(fresh.encoder.backbone_features(pixels))[0], records[sample], atol=1e-2
    )


def test_bfloat16_features_match_the_trainer_under_the_same_policy(dataset, tmp_path):
    """``--precision auto`` is bf16 on CPUs with AMX; the trainer's cache under the same
    policy must agree with the job."""
    prefix = str(tmp_path / "bf16" / "scenes")
    argv = ["--captions", str(dataset / "captions.csv"), "--images", str(dataset / "images")]
    argv += ["--output", prefix, "--preset", "tiny", "--precision", "mixed_bfloat16"]
    run(argv, test_pipeline=TestPipeline())
    assert read_spec(prefix).precision == "mixed_bfloat16"
    expected, _ = trainer_features(prefix, dataset, "mixed_bfloat16", tmp_path / "cache")
    assert_same_features(read_records(prefix), expected)


def cache_pixels(path: Path) -> np.ndarray:
    return load_image(path.read_bytes(), 75, tiny().captioner.image.max_pixels).pixels


def test_feature_shards_give_the_trainer_examples_by_name(dataset, feature_run):
    prefix, _ = feature_run
    records = read_records(prefix)
    shards = open_feature_shards(prefix)
    names = read_captions(dataset / "captions.csv").images()
    wanted = [names[3], BROKEN, names[0], MISSING, names[7]]
    cache = shards.cache_for(wanted)
    # Images without features are left out, as the trainer's own cache leaves them out.
    assert cache.images == [names[3], names[0], names[7]]
    seen = {}
    for row, values in cache.dataset().as_numpy_iterator():
        seen[cache.images[row]] = values
    assert set(seen) == set(cache.images)  # records of other images are dropped
    for name, values in seen.items():
        np.testing.assert_array_equal(values, records[name])
    with pytest.raises(UserError, match="not in the features run"):
        shards.cache_for([names[0], "never_listed.png"])


def test_a_rerun_removes_the_earlier_runs_files(feature_run, tmp_path):
    prefix, summary = feature_run
    copy = tmp_path / "scenes"
    for file in Path(prefix).parent.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    earlier = [
        tmp_path / "scenes_features-19990101T000000-abcdef-00000-of-00001.tfrecord",
        tmp_path / "scenes_index-19990101T000000-abcdef-00000-of-00001.txt",
        tmp_path / "scenes_errors-19990101T000000-abcdef-00000-of-00001.parquet",
    ]
    for file in earlier:
        file.write_bytes(b"stale")
    assert remove_earlier_runs(str(copy), summary["run_id"]) == 3
    assert not any(file.exists() for file in earlier)
    assert len(read_records(str(copy))) == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "50"], "--image-size must be at least 75"),
        (["--backbone-weights", "/no/such/file.h5"], "does not exist"),
        (["--max-batch-size", "2"], "--min-batch-size"),
    ],
)
def test_features_user_mistakes_are_one_line(dataset, tmp_path, capsys, args, message):
    argv = ["features", "--captions", str(dataset / "captions.csv")]
    argv += ["--images", str(dataset / "images"), "--output", str(tmp_path / "f"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_train_refuses_flags_that_contradict_the_features(dataset, feature_run, tmp_path, capsys):
    prefix, _ = feature_run
    base = ["train", "--captions", str(dataset / "captions.csv"), "--out", str(tmp_path / "b")]
    base += ["--preset", "tiny", "--features", prefix]
    assert main([*base, "--image-size", "99"]) == 2
    assert "--image-size 99 (features: 75)" in capsys.readouterr().err
    assert main([*base, "--trainable-backbone"]) == 2
    assert "frozen backbone" in capsys.readouterr().err
    spec_file = Path(prefix + "_features.json")
    incomplete = json.loads(spec_file.read_text()) | {"complete": False}
    other = tmp_path / "other"
    (tmp_path / "other_features.json").write_text(json.dumps(incomplete))
    assert main([*base[:-1], str(other)]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_images_and_features_on_gs(gcs, dataset, tmp_path):
    """Images read from and every output written to gs:// (the GCS emulator, through
    Beam's filesystem), workers loading the backbone from there too."""
    from tests.conftest import GCS_BUCKET

    for path in sorted((dataset / "images").iterdir())[:6]:
        gcs.blob(f"photos/{path.name}").upload_from_filename(str(path))
    listed = sorted(path.name for path in (dataset / "images").iterdir())[:6]
    captions = tmp_path / "captions.csv"
    captions.write_text("image,caption\n" + "".join(f"{name},a scene\n" for name in listed))
    output = f"gs://{GCS_BUCKET}/features/scenes"
    argv = ["--captions", str(captions), "--images", f"gs://{GCS_BUCKET}/photos"]
    argv += ["--output", output, "--preset", "tiny", "--project", "test-project"]
    summary = run(argv, test_pipeline=TestPipeline())

    blobs = {blob.name: blob for blob in gcs.client.list_blobs(GCS_BUCKET, prefix="features/")}
    spec = json.loads(blobs["features/scenes_features.json"].download_as_bytes())
    assert spec["complete"] and "features/scenes_backbone.weights.h5" in blobs
    shards = [name for name in blobs if name.startswith("features/scenes_features-")]
    local = tmp_path / "shards.tfrecord"
    local.write_bytes(b"".join(blobs[name].download_as_bytes() for name in sorted(shards)))
    names = [
        tf.train.Example.FromString(record).features.feature["image"].bytes_list.value[0]
        for record in tf.data.TFRecordDataset(str(local)).as_numpy_iterator()
    ]
    errors = [name for name in blobs if name.startswith("features/scenes_errors-")]
    rows = [
        row
        for name in errors
        for row in pq.read_table(io.BytesIO(blobs[name].download_as_bytes())).to_pylist()
    ]
    assert sorted(name.decode() for name in names) == sorted(n for n in listed if n != BROKEN)
    assert [row["image_uri"] for row in rows] == [f"gs://{GCS_BUCKET}/photos/{BROKEN}"]
    assert summary["features"] + summary["errors"] == 6
