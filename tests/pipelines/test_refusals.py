"""Runs that would do harm are refused, or commit only what is safe, and exit as documented:
an empty manifest, a glob that matches nothing, an all-corrupt folder, a misspelt flag,
an unpinned bundle, too many errors; neighbouring outputs never touch each other; and an
output written in the layout before tables is read once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioning import run_layout, tables
from captioning.cli.main import main
from captioning.errors import EXIT_ERROR_RATE, EXIT_USAGE
from tests.test_bundle_trust import _forge


@pytest.fixture(scope="module")
def images(tmp_path_factory, scenes) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for image in sorted((scenes / "images").glob("*.png"))[:6]:
        shutil.copy(image, folder / image.name)
    return folder


def caption(capsys, output: Path, bundle, *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["caption", "--output", str(output), "--model", str(bundle), *args])
    errors = [line for line in capsys.readouterr().err.splitlines() if "captioning caption" in line]
    return code, errors


def captions(output: Path) -> dict[str, object]:
    rows = tables.read(
        run_layout.captions_table(str(output)), columns=["image_uri", "captioned_at"]
    ).to_pydict()
    return dict(zip(rows["image_uri"], rows["captioned_at"], strict=True))


@pytest.fixture
def earlier(capsys, images, tiny_bundle, tmp_path) -> tuple[Path, dict]:
    output = tmp_path / "out"
    code, _ = caption(capsys, output, tiny_bundle, "--input", f"{images}/*.png")
    assert code == 0
    rows = captions(output)
    assert len(rows) == 6
    return output, rows


def test_an_empty_manifest_is_refused_and_changes_nothing(capsys, earlier, tiny_bundle, tmp_path):
    output, rows = earlier
    version = tables.version(run_layout.captions_table(str(output)))
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("")
    code, errors = caption(capsys, output, tiny_bundle, "--input-manifest", str(manifest))
    assert code == EXIT_USAGE
    assert len(errors) == 1 and "the inputs list nothing" in errors[0]
    assert captions(output) == rows
    assert tables.version(run_layout.captions_table(str(output))) == version


def test_a_glob_that_matches_nothing_is_refused(capsys, earlier, tiny_bundle, tmp_path):
    output, rows = earlier
    code, errors = caption(capsys, output, tiny_bundle, "--input", f"{tmp_path}/nothing/*.png")
    assert code == EXIT_USAGE and len(errors) == 1 and "--allow-empty" in errors[0]
    assert captions(output) == rows


def test_allow_empty_lets_a_run_of_nothing_replace_the_captions(
    capsys, earlier, tiny_bundle, tmp_path
):
    output, _ = earlier
    code, _ = caption(
        capsys, output, tiny_bundle, "--input", f"{tmp_path}/nothing/*.png", "--allow-empty"
    )
    assert code == EXIT_ERROR_RATE  # its one row is the glob's NoMatch error
    assert captions(output) == {}


def test_an_all_corrupt_folder_keeps_the_captions_and_commits_its_errors(
    capsys, earlier, tiny_bundle, tmp_path
):
    output, rows = earlier
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (corrupt / name).write_bytes(b"\x89PNG not really")
    code, errors = caption(capsys, output, tiny_bundle, "--input", f"{corrupt}/*.png")
    assert code == EXIT_ERROR_RATE
    assert len(errors) == 1 and "earlier captions were kept" in errors[0]
    assert captions(output) == rows
    failed = tables.read(run_layout.errors_table(str(output)), columns=["image_uri"])
    assert sorted(failed.column("image_uri").to_pylist()) == sorted(
        str(p) for p in corrupt.iterdir()
    )
    summary = json.loads(Path(run_layout.summary_path(str(output))).read_text())
    assert summary["error_rate"] == 1.0 and summary["captions_committed"] is False


def test_a_misspelt_flag_is_refused_with_a_suggestion(capsys, earlier, images, tiny_bundle):
    output, rows = earlier
    code, errors = caption(capsys, output, tiny_bundle, "--input", f"{images}/*", "--skip-existng")
    assert code == EXIT_USAGE
    assert len(errors) == 1 and "did you mean --skip-existing" in errors[0]
    assert captions(output) == rows


def test_too_many_errors_commit_and_exit_with_the_alert_status(
    capsys, images, tiny_bundle, tmp_path
):
    folder = tmp_path / "some_broken"
    shutil.copytree(images, folder)
    (folder / "broken.png").write_bytes(b"junk")  # 1 of 7 inputs: 0.14
    output = tmp_path / "out"
    args = ["--input", f"{folder}/*.png", "--skip-existing", "--max-error-rate", "0.1"]
    code, errors = caption(capsys, output, tiny_bundle, *args)
    assert (
        code == EXIT_ERROR_RATE and len(errors) == 1 and "0.143 > --max-error-rate 0.1" in errors[0]
    )
    assert len(captions(output)) == 6  # an incremental run commits what it captioned
    summary = json.loads(Path(run_layout.summary_path(str(output))).read_text())
    assert summary["error_rate"] == pytest.approx(1 / 7, abs=1e-4)
    # The same night with the default limit: last night's broken file, retried, is 1 of
    # 7 listed inputs (6 already captioned), above 0.05 as well; with 0.2 it passes.
    code, _ = caption(capsys, output, tiny_bundle, *args[:-1], "0.2")
    assert code == 0


def test_a_bundle_that_is_not_the_pinned_model_is_refused(
    capsys, earlier, images, tiny_bundle, tmp_path
):
    output, rows = earlier
    pinned = json.loads((Path(tiny_bundle) / "manifest.json").read_text())["model_id"]
    forged = tmp_path / "forged"
    forged_id = _forge(Path(tiny_bundle), forged)
    assert forged_id != pinned
    code, errors = caption(
        capsys, output, forged, "--input", f"{images}/*.png", "--expect-model-id", pinned
    )
    assert code == EXIT_USAGE and len(errors) == 1 and "refusing it" in errors[0]
    assert captions(output) == rows
    code, _ = caption(
        capsys, output, tiny_bundle, "--input", f"{images}/*.png", "--expect-model-id", pinned
    )
    assert code == 0


def test_neighbouring_outputs_never_touch_each_other(capsys, images, tiny_bundle, tmp_path):
    first, second = tmp_path / "out" / "cap", tmp_path / "out" / "cap-v2"
    half = sorted(images.iterdir())
    assert caption(capsys, first, tiny_bundle, "--input", str(half[0]))[0] == 0
    assert caption(capsys, second, tiny_bundle, "--input", f"{images}/*.png")[0] == 0
    second_files = sorted(p.relative_to(second) for p in second.rglob("*"))
    second_rows = captions(second)
    # A full rerun of out/cap and an incremental one: out/cap-v2 is untouched, and the
    # incremental run of out/cap skips only what out/cap itself holds.
    assert caption(capsys, first, tiny_bundle, "--input", str(half[0]))[0] == 0
    code, _ = caption(capsys, first, tiny_bundle, "--input", f"{images}/*.png", "--skip-existing")
    assert code == 0
    assert sorted(p.relative_to(second) for p in second.rglob("*")) == second_files
    assert captions(second) == second_rows
    assert set(captions(first)) == {str(p) for p in images.iterdir()}


def test_an_output_in_the_old_layout_is_read_once(capsys, images, tiny_bundle, tmp_path):
    """Before tables, --output PREFIX wrote PREFIX-<run>-*.parquet beside it; a killed run
    could leave its rows there twice. The first incremental run imports them, once."""
    prefix = tmp_path / "out" / "cap"
    prefix.parent.mkdir()
    done = sorted(str(p) for p in images.iterdir())[:4]
    old = pa.table(
        {
            "image_uri": done + done[:1],
            "caption": ["a small red circle"] * 5,
            "score": [-0.5] * 5,
            "alternatives": [[]] * 5,
            "width": [64] * 5,
            "height": [64] * 5,
            "model_id": ["sha256-old"] * 5,
            "captioned_at": pa.array([0, 0, 0, 0, 1], pa.timestamp("us", tz="UTC")),
        },
        schema=run_layout.CAPTIONS_SCHEMA,
    )
    pq.write_table(old, f"{prefix}-20250101T000000-abcdef-00000-of-00001.parquet")
    code, _ = caption(capsys, prefix, tiny_bundle, "--input", f"{images}/*.png", "--skip-existing")
    assert code == 0
    rows = tables.read(run_layout.captions_table(str(prefix))).to_pydict()
    assert sorted(rows["image_uri"]) == sorted(str(p) for p in images.iterdir())
    imported = {
        u for u, m in zip(rows["image_uri"], rows["model_id"], strict=True) if m == "sha256-old"
    }
    assert imported == set(done)  # imported, not captioned again, and once each
    # A second run does not import them again.
    code, _ = caption(capsys, prefix, tiny_bundle, "--input", f"{images}/*.png", "--skip-existing")
    assert code == 0
    assert tables.read(run_layout.captions_table(str(prefix))).num_rows == 6
