"""The features job on a real TestPipeline: every image ends in the shards or the errors
table of the committed run, and the shards hold what the trainer's own feature cache
would compute."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from captioning import run_layout, tables
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
from captioning.training.feature_spec import read_spec
from captioning.training.trainer import build_captioner
from pipelines.feature_pipeline import feature_config, remove_stale_runs, run
from pipelines.options import FeatureOptions

BROKEN, MISSING = "broken.png", "missing.png"


def make_dataset(root: Path, count: int = 16, seed: int = 5) -> Path:
    """Synthetic scenes plus one undecodable image and one listed image that does not exist."""
    generate_scenes(root, count=count, seed=seed)
    (root / "images" / BROKEN).write_bytes(b"this is not a png")
    with (root / "captions.csv").open("a") as handle:
        handle.write(f"{BROKEN},a broken image\n{MISSING},a missing image\n")
    return root


def read_records(output: str) -> dict[str, np.ndarray]:
    """The records of the committed run: the shards its spec names."""
    spec = read_spec(output)
    files = [run_layout.join(output, name) for name in spec.shards]
    records = {}
    for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
        example = tf.train.Example.FromString(record).features.feature
        name = example["image"].bytes_list.value[0].decode()
        values = np.frombuffer(example["features"].bytes_list.value[0], spec.feature_dtype)
        records[name] = values.reshape(spec.feature_shape)
    return records


def read_errors(output: str) -> list[dict]:
    """The errors table as the committed run committed it."""
    version = read_spec(output).errors_version
    return tables.read(run_layout.errors_table(output), at_version=version).to_pylist()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("feature_scenes"))


@pytest.fixture(scope="module")
def feature_run(dataset, tmp_path_factory) -> tuple[str, dict]:
    output = str(tmp_path_factory.mktemp("features") / "scenes")
    argv = [
        "--captions",
        str(dataset / "captions.csv"),
        "--images",
        str(dataset / "images"),
        "--output",
        output,
        "--preset",
        "tiny",
        "--precision",
        "float32",
    ]
    return output, run(argv, test_pipeline=TestPipeline())


def test_every_image_ends_in_the_shards_or_the_errors_table(dataset, feature_run):
    output, summary = feature_run
    records = read_records(output)
    errors = {Path(row["image_uri"]).name: row for row in read_errors(output)}
    names = read_captions(dataset / "captions.csv").images()
    assert len(names) == 18
    assert set(records) | set(errors) == set(names)
    assert not set(records) & set(errors)
    assert errors[BROKEN]["stage"] == "decode"
    assert errors[MISSING]["stage"] == "read"
    assert errors[MISSING]["image_uri"] == str(dataset / "images" / MISSING)

    assert summary["inputs"] == 18 and summary["features"] == 16 and summary["errors"] == 2
    assert summary["errors_by_stage"] == {"decode": 1, "read": 1}
    spec = read_spec(output)
    assert spec.complete and spec.counts["features"] == 16
    assert spec.feature_shape == (49, 256)  # mixed0 at 75 px: a 7x7 grid of 256 channels
    assert spec.feature_dtype == "float16" and spec.precision == "float32"
    assert (spec.image.image_size, spec.feature_layer, spec.backbone_weights) == (
        75,
        "mixed0",
        None,
    )
    index = [Path(output, name) for name in spec.index]
    assert sorted(line for file in index for line in file.read_text().split()) == sorted(records)
    # The spec names exactly the run's files, all in the layout of run_layout.
    shards = Path(output, run_layout.SHARDS_FOLDER)
    assert sorted(spec.shards + spec.index) == sorted(
        f"{run_layout.SHARDS_FOLDER}/{file.name}" for file in shards.iterdir()
    )
    assert Path(run_layout.backbone_path(output, spec.run_id)).is_file()
    assert spec.errors_version == tables.version(run_layout.errors_table(output))
    # What the run needed only while it ran is gone: its input list, Beam's temp folders.
    assert not list(Path(output).rglob("inputs-*")) and not list(Path(output).rglob("beam-temp-*"))
    # The job's default retention is the tables' own.
    assert (
        PipelineOptions([]).view_as(FeatureOptions).retention_hours
        == tables.DEFAULT_RETENTION_HOURS
    )


def trainer_features(
    output: str, dataset: Path, precision: str, cache_root: Path
) -> tuple[dict[str, np.ndarray], Captioner]:
    """Features of every image from the trainer's frozen-backbone path (its model's
    ``backbone_features`` into ``build_cache``), given the backbone the job saved."""
    config, _ = feature_config("tiny", None, None)
    names = [name for name in read_captions(dataset / "captions.csv").images() if name != MISSING]
    vocabulary = Vocabulary.build(["a small red circle"], 20, 12)
    with dtype_policy(precision):
        model = build_captioner(config, vocabulary, load_backbone_weights=False)
    model.encoder.backbone.load_weights(run_layout.backbone_path(output, read_spec(output).run_id))
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
    output, _ = feature_run
    records = read_records(output)
    expected, _ = trainer_features(output, dataset, "float32", tmp_path)
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
    output = str(tmp_path / "bf16")
    argv = ["--captions", str(dataset / "captions.csv"), "--images", str(dataset / "images")]
    argv += ["--output", output, "--preset", "tiny", "--precision", "mixed_bfloat16"]
    run(argv, test_pipeline=TestPipeline())
    assert read_spec(output).precision == "mixed_bfloat16"
    expected, _ = trainer_features(output, dataset, "mixed_bfloat16", tmp_path / "cache")
    assert_same_features(read_records(output), expected)


def cache_pixels(path: Path) -> np.ndarray:
    return load_image(path.read_bytes(), 75, tiny().captioner.image.max_pixels).pixels


def test_feature_shards_give_the_trainer_examples_by_name(dataset, feature_run):
    output, _ = feature_run
    records = read_records(output)
    shards = open_feature_shards(output)
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


def test_readers_take_only_the_files_the_spec_names(feature_run, tmp_path):
    """Shards of another run beside the committed one (a killed run's) are never read,
    and a file the spec names that is gone is a one-line error, not fewer examples."""
    output, _ = feature_run
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    spec = read_spec(str(copy))
    other = "20990101T000000-abcdef"
    for name in spec.shards + spec.index:
        shutil.copy(copy / name, copy / name.replace(spec.run_id, other))
    shards = open_feature_shards(str(copy))
    assert shards.files == [str(copy / name) for name in spec.shards]
    assert len(shards.available) == 16
    (copy / spec.shards[0]).unlink()
    with pytest.raises(UserError, match=f"files of run {spec.run_id} are missing"):
        open_feature_shards(str(copy))


def test_a_commit_removes_the_replaced_and_stale_runs_files(feature_run, tmp_path):
    output, summary = feature_run
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    shards = copy / run_layout.SHARDS_FOLDER

    def files_of(run_id: str) -> list[Path]:
        files = [
            shards / f"features-{run_id}-00000-of-00001.tfrecord",
            shards / f"index-{run_id}-00000-of-00001.txt",
            Path(run_layout.backbone_path(str(copy), run_id)),
            shards / f"beam-temp-features-{run_id}-0123456789abcdef" / "0123-4567",
        ]
        for file in files:
            file.parent.mkdir(exist_ok=True)
            file.write_bytes(b"stale")
        return files

    replaced = files_of("19990101T000000-abcdef")  # the run the commit replaced
    killed_long_ago = files_of("19990102T000000-bcdefa")
    for file in killed_long_ago:
        old = time.time() - 200 * 3600
        os.utime(file, (old, old))
        os.utime(file.parent, (old, old))
    running = files_of("19990103T000000-cdefab")  # recent: maybe a run still writing
    unrelated = copy / "notes.txt"
    unrelated.write_text("mine")

    removed = remove_stale_runs(
        str(copy), summary["run_id"], replaced="19990101T000000-abcdef", retention_hours=168
    )
    assert not any(file.exists() for file in replaced + killed_long_ago)
    assert not any(file.parent.exists() for file in (replaced[-1], killed_long_ago[-1]))
    assert all(file.exists() for file in running) and unrelated.exists()
    assert len(removed) == 10  # 4 files of each run, and their Beam temp folders
    assert len(read_records(str(copy))) == 16  # the committed run is untouched
    remove_stale_runs(str(copy), summary["run_id"], replaced=None, retention_hours=0)
    assert not any(file.exists() for file in running) and unrelated.exists()
    assert len(read_records(str(copy))) == 16


def test_a_run_with_no_features_commits_nothing(dataset, feature_run, tmp_path):
    output, _ = feature_run
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    before = sorted(path.relative_to(copy) for path in copy.rglob("*"))
    empty = tmp_path / "no_images"
    empty.mkdir()
    argv = ["--captions", str(dataset / "captions.csv"), "--images", str(empty)]
    argv += ["--output", str(copy), "--preset", "tiny", "--precision", "float32"]
    with pytest.raises(UserError, match=r"computed no features .* nothing was committed"):
        run(argv, test_pipeline=TestPipeline())
    assert read_spec(str(copy)) == read_spec(output)
    # The refused run's own files are gone; the errors table has its creation only.
    after = sorted(path.relative_to(copy) for path in copy.rglob("*"))
    assert [path for path in after if path not in before] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "50"], "--image-size must be at least 75"),
        (["--backbone-weights", "/no/such/file.h5"], "does not exist"),
        (["--max-batch-size", "2"], "--min-batch-size"),
        (["--retention-hours", "-1"], "--retention-hours must be 0 or more"),
    ],
)
def test_features_user_mistakes_are_one_line(dataset, tmp_path, capsys, args, message):
    argv = ["features", "--captions", str(dataset / "captions.csv")]
    argv += ["--images", str(dataset / "images"), "--output", str(tmp_path / "f"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_train_refuses_flags_that_contradict_the_features(dataset, feature_run, tmp_path, capsys):
    output, _ = feature_run
    base = ["train", "--captions", str(dataset / "captions.csv"), "--out", str(tmp_path / "b")]
    base += ["--preset", "tiny", "--features", output]
    assert main([*base, "--image-size", "99"]) == 2
    assert "--image-size 99 (features: 75)" in capsys.readouterr().err
    assert main([*base, "--trainable-backbone"]) == 2
    assert "frozen backbone" in capsys.readouterr().err
    spec_file = Path(run_layout.feature_spec_path(output))
    incomplete = json.loads(spec_file.read_text()) | {"complete": False}
    other = tmp_path / "other"
    other.mkdir()
    (other / run_layout.FEATURE_SPEC_FILE).write_text(json.dumps(incomplete))
    assert main([*base[:-1], str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not finish" in err[0], err
    (other / run_layout.FEATURE_SPEC_FILE).write_text("{not json")
    assert main([*base[:-1], str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a feature spec" in err[0], err
    assert main([*base[:-1], str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no features run has committed there" in err[0], err


@pytest.mark.parametrize("output_on", ["local", "gs"])
def test_images_and_features_on_gs(gcs_process, dataset, tmp_path, output_on):
    """Images read from gs:// (the GCS emulator, through Beam's filesystem); with
    ``gs`` every output is written there too, and the workers load the backbone from it."""
    from tests.conftest import GCS_BUCKET

    gcs = gcs_process
    for path in sorted((dataset / "images").iterdir())[:6]:
        gcs.blob(f"photos/{path.name}").upload_from_filename(str(path))
    listed = sorted(path.name for path in (dataset / "images").iterdir())[:6]
    captions = tmp_path / "captions.csv"
    captions.write_text("image,caption\n" + "".join(f"{name},a scene\n" for name in listed))
    output = f"gs://{GCS_BUCKET}/features/scenes" if output_on == "gs" else str(tmp_path / "out")
    argv = ["--captions", str(captions), "--images", f"gs://{GCS_BUCKET}/photos"]
    argv += ["--output", output, "--preset", "tiny", "--project", "test-project"]
    summary = run(argv, test_pipeline=TestPipeline())

    spec = read_spec(output)
    assert spec.complete and FileSystems.exists(run_layout.backbone_path(output, spec.run_id))
    if output_on == "gs":
        blobs = [b.name for b in gcs.client.list_blobs(GCS_BUCKET, prefix="features/")]
        assert "features/scenes/features.json" in blobs
    rows = read_errors(output)
    if output_on == "local":  # TensorFlow's own GCS client cannot be sent to the emulator
        assert sorted(read_records(output)) == sorted(n for n in listed if n != BROKEN)
    else:
        assert all(FileSystems.exists(run_layout.join(output, f)) for f in spec.shards)
    assert [row["image_uri"] for row in rows] == [f"gs://{GCS_BUCKET}/photos/{BROKEN}"]
    assert summary["features"] + summary["errors"] == 6
