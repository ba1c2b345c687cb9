"""Nightly runs never lose, duplicate or silently redo work: real `captioning caption`
processes, SIGKILLed at five points and rerun, and two real runs committing at once.

Each case reads the committed tables back and compares them with the input set."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from captioning import run_layout, tables
from tests.pipelines.nightly_runs import assert_exactly_once, caption, committed, start

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, scenes) -> Path:
    """Images of a growing archive: ``old/`` (captioned last night, plus a broken file)
    and ``new/`` (arrived today), 12 scenes each."""
    root = tmp_path_factory.mktemp("nightly")
    images = sorted((scenes / "images").glob("*.png"))
    for folder, chosen in (("old", images[:12]), ("new", images[12:24])):
        (root / folder).mkdir()
        for image in chosen:
            shutil.copy(image, root / folder / image.name)
    (root / "old" / "broken.png").write_bytes(b"not an image")
    return root


def uris(*folders: Path) -> set[str]:
    return {str(path) for folder in folders for path in folder.iterdir()}


@pytest.fixture(scope="module")
def last_night(archive, tiny_bundle, tmp_path_factory) -> tuple[Path, dict]:
    """Yesterday's committed output: every image of ``old/`` captioned or an error row."""
    output = tmp_path_factory.mktemp("last_night") / "out"
    code, stderr = caption(nightly_args(archive, output, tiny_bundle, ["old"]))
    assert code == 0, stderr
    rows = assert_exactly_once(output, uris(archive / "old"))
    assert len(rows) == 12
    return output, rows


def nightly_args(archive: Path, output: Path, bundle, folders=("old", "new")) -> list[str]:
    args = [f"--input={archive / folder}/*.png" for folder in folders]
    # The broken file is 1 of 13 or of 25 inputs, above the default 5% alert level.
    limit = ["--max-error-rate", "0.1"]
    return [*args, "--output", str(output), "--model", str(bundle), *limit, "--skip-existing"]


def beam_temp_folders(output: Path) -> list[Path]:
    return [p for name in ("captions", "errors") for p in (output / name).glob("beam-temp-*")]


def kill_while_writing(run, output: Path) -> None:
    """SIGKILL as soon as Beam's writer has a temporary data file open."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(any(folder.iterdir()) for folder in beam_temp_folders(output)):
            run.kill()
            return
        assert run.process.poll() is None, "the run ended before it was caught writing"
        time.sleep(0.005)
    raise AssertionError("no data file was written")


@pytest.mark.parametrize(
    "point", ["before-write", "while-writing", "written", "between-commits", "committed"]
)
def test_killed_nightly_run_then_rerun_holds_every_input_once(
    point, archive, tiny_bundle, last_night, tmp_path
):
    earlier, earlier_rows = last_night
    output = tmp_path / "out"
    shutil.copytree(earlier, output)
    args = nightly_args(archive, output, tiny_bundle)
    versions_before = tables.version(run_layout.captions_table(str(output)))

    if point == "before-write":
        run = start(args)
        run.wait_for("caption run ")
        run.kill()
    elif point == "while-writing":
        run = start([*args, "--max-batch-size", "2", "--min-batch-size", "1"])
        kill_while_writing(run, output)
    else:
        run = start(args, hold=f"{point}={tmp_path / 'never'}")
        run.wait_for(f"captioning-test-hold {point}")
        run.kill()

    rows, _ = committed(output)
    if point in ("between-commits", "committed"):
        assert set(rows) == uris(archive / "old", archive / "new") - {
            str(archive / "old" / "broken.png")
        }
    else:  # nothing the killed run wrote is visible
        assert rows == earlier_rows
        assert tables.version(run_layout.captions_table(str(output))) == versions_before

    code, stderr = caption([*args, "--retention-hours", "0"])
    assert code == 0, stderr
    rows = assert_exactly_once(output, uris(archive / "old", archive / "new"))
    # Last night's captions were neither lost nor redone.
    assert {uri: rows[uri] for uri in earlier_rows} == earlier_rows
    assert len(rows) == 24
    # What the killed run left behind is gone after the rerun's vacuum.
    assert not beam_temp_folders(output)
    committed_files = {
        Path(uri).name
        for name in ("captions", "errors")
        for uri in tables.committed_files(str(output / name))
    }
    on_disk = {
        path.name
        for name in ("captions", "errors")
        for path in (output / name).glob(f"{run_layout.DATA_FILE_PREFIX}-*.parquet")
    }
    assert on_disk == committed_files


def test_concurrent_appends_both_land(archive, tiny_bundle, last_night, tmp_path):
    earlier, earlier_rows = last_night
    output = tmp_path / "out"
    shutil.copytree(earlier, output)
    new = sorted((archive / "new").iterdir())
    halves = [tmp_path / "new_a", tmp_path / "new_b"]
    for half, images in zip(halves, (new[:6], new[6:]), strict=True):
        half.mkdir()
        for image in images:
            shutil.copy(image, half / image.name)
    release = tmp_path / "release"
    runs = [
        start(
            [
                f"--input={half}/*.png",
                "--output",
                str(output),
                "--model",
                str(tiny_bundle),
                "--skip-existing",
                "--max-error-rate",
                "0.1",
            ],
            hold=f"written={release}",
        )
        for half in halves
    ]
    for run in runs:
        run.wait_for("captioning-test-hold written")
    release.touch()  # both commit at the same moment
    for run in runs:
        assert run.finish() == 0, run.stderr
    rows, _ = committed(output)
    assert set(rows) == set(earlier_rows) | uris(*halves)
    assert {uri: rows[uri] for uri in earlier_rows} == earlier_rows


def test_concurrent_full_reruns_one_commits_the_other_refuses(
    archive, tiny_bundle, last_night, tmp_path
):
    earlier, _ = last_night
    output = tmp_path / "out"
    shutil.copytree(earlier, output)
    release = tmp_path / "release"
    args = nightly_args(archive, output, tiny_bundle)[:-1]  # no --skip-existing: replace
    runs = [start(args, hold=f"written={release}") for _ in range(2)]
    for run in runs:
        run.wait_for("captioning-test-hold written")
    release.touch()
    codes = sorted(run.finish() for run in runs)
    assert codes == [0, 4], [run.stderr for run in runs]
    loser = next(run for run in runs if run.process.returncode == 4)
    message = [line for line in loser.lines if "captioning caption: error:" in line]
    assert len(message) == 1 and "another run committed" in message[0], loser.stderr
    assert "Traceback" not in loser.stderr
    # The winner's rows, each input exactly once; nothing of the loser's.
    assert_exactly_once(output, uris(archive / "old", archive / "new"))
