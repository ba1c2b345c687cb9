"""A features run killed before its commit leaves the committed features usable: real
`captioning features` processes, SIGKILLed at the hold points of the commit, then rerun.

The killed run differs from the committed one (one more broken image), so a reader that
took the newest files, or the newest errors table version, instead of what the committed
spec names would show it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from captioning import run_layout, tables
from captioning.models.image_encoder import build_inception_backbone
from captioning.training.feature_shards import FeatureShards, open_feature_shards
from captioning.training.feature_spec import read_spec
from tests.pipelines.nightly_runs import Run, start
from tests.pipelines.test_feature_pipeline import BROKEN, MISSING, make_dataset

pytestmark = pytest.mark.timeout(900)

BROKEN_TOO = "broken_too.png"
RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")


def start_features(args: list[str], hold: str | None = None) -> Run:
    return start(args, hold, command="features")


def features_args(dataset: Path, captions: str, output: Path) -> list[str]:
    return [
        "--captions",
        str(dataset / captions),
        "--images",
        str(dataset / "images"),
        "--output",
        str(output),
        "--preset",
        "tiny",
        "--precision",
        "float32",
        "--max-batch-size",
        "8",
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """8 scenes, a broken and a missing image (captions.csv); captions_too.csv also lists
    a second broken image, so a run of it has other errors than a run of captions.csv."""
    root = make_dataset(tmp_path_factory.mktemp("killed_scenes"), count=8)
    (root / "images" / BROKEN_TOO).write_bytes(b"not a png either")
    text = (root / "captions.csv").read_text()
    (root / "captions_too.csv").write_text(text + f"{BROKEN_TOO},another broken image\n")
    return root


@pytest.fixture(scope="module")
def committed(dataset, tmp_path_factory) -> Path:
    """A DIR holding one committed features run of captions.csv."""
    output = tmp_path_factory.mktemp("committed") / "features"
    run = start_features(features_args(dataset, "captions.csv", output))
    assert run.finish() == 0, run.stderr
    return output


def run_files(output: Path, run_id: str) -> list[Path]:
    """Every file on disk that belongs to ``run_id`` (shards, index, backbone)."""
    shards = sorted((output / run_layout.SHARDS_FOLDER).glob(f"*-{run_id}-*"))
    return [*shards, Path(run_layout.backbone_path(str(output), run_id))]


def read_all(shards: FeatureShards, names: list[str]) -> dict[str, np.ndarray]:
    cache = shards.cache_for(names)
    return {cache.images[row]: values for row, values in cache.dataset().as_numpy_iterator()}


@pytest.mark.parametrize("point", ["features-written", "features-errors-committed"])
def test_killed_features_run_leaves_the_committed_run_then_a_rerun_replaces_it(
    point, dataset, committed, tmp_path
):
    output = tmp_path / "features"
    shutil.copytree(committed, output)
    spec_file = Path(run_layout.feature_spec_path(str(output)))
    spec_text = spec_file.read_text()
    before = read_spec(str(output))
    before_files = run_files(output, before.run_id)
    assert len(before_files) >= 3
    shards = open_feature_shards(str(output))
    names = sorted(shards.available | set(shards.failed))
    records = read_all(shards, names)
    assert len(records) == 8 and set(shards.failed) == {BROKEN, MISSING}

    args = features_args(dataset, "captions_too.csv", output)
    killed = start_features(args, hold=f"{point}={tmp_path / 'never'}")
    killed.wait_for(f"captioning-test-hold {point}", timeout=600)
    killed.kill()

    # The killed run had written everything: its shards, index and backbone are there...
    killed_id = next(
        RUN_ID.search(path.name).group(0)
        for path in (output / run_layout.SHARDS_FOLDER).glob("features-*.tfrecord")
        if before.run_id not in path.name
    )
    killed_files = run_files(output, killed_id)
    assert len(killed_files) >= 3 and all(path.is_file() for path in killed_files)
    errors_table = run_layout.errors_table(str(output))
    if point == "features-errors-committed":  # ...and it may have committed its errors
        assert tables.version(errors_table) > before.errors_version
    else:
        assert tables.version(errors_table) == before.errors_version
    # ...but the committed spec, its files and the reader's view are the earlier run's.
    assert spec_file.read_text() == spec_text
    assert all(path.is_file() for path in before_files)
    shards = open_feature_shards(str(output))
    assert shards.spec == before
    assert set(shards.failed) == {BROKEN, MISSING}  # not the killed run's errors
    again = read_all(shards, names)
    assert set(again) == set(records)
    for name, values in records.items():
        np.testing.assert_array_equal(again[name], values)
    base = build_inception_backbone(75, "mixed0", None)
    shards.load_backbone(keras.Model(base.input, base.get_layer("mixed0").output))

    # A rerun commits; the files of the run it replaced and of the killed run are gone.
    rerun = start_features([*args, "--retention-hours", "0"])
    assert rerun.finish() == 0, rerun.stderr
    after = read_spec(str(output))
    assert after.run_id not in (before.run_id, killed_id)
    assert not any(path.exists() for path in before_files + killed_files)
    on_disk = sorted(path.name for path in (output / run_layout.SHARDS_FOLDER).iterdir())
    assert on_disk == sorted(Path(name).name for name in after.shards + after.index)
    assert [path.name for path in output.glob("backbone-*")] == [
        Path(run_layout.backbone_path(str(output), after.run_id)).name
    ]
    shards = open_feature_shards(str(output))
    assert set(shards.failed) == {BROKEN, MISSING, BROKEN_TOO}
    assert len(read_all(shards, [*names, BROKEN_TOO])) == 8
    # The errors table holds the rerun's files only: the killed run's are vacuumed.
    committed_files = {Path(uri).name for uri in tables.committed_files(errors_table)}
    parquet = {path.name for path in Path(errors_table).glob("*.parquet")}
    assert parquet == committed_files and len(committed_files) >= 1
    assert not list(output.rglob("beam-temp-*"))
