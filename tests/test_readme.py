"""README's table-reading example runs as written, against a real caption run's output,
and reads only what was committed."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import textwrap
from pathlib import Path

from captioning.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_block(after: str) -> str:
    text = README.read_text()
    start = text.index(after)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block after {after!r}"
    return textwrap.dedent(match.group(1))


def test_the_readme_reads_the_committed_tables(scenes, tiny_bundle, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    for image in sorted((scenes / "images").glob("*.png"))[:5]:
        shutil.copy(image, images / image.name)
    (images / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "out" / "archive"
    args = ["caption", "--input", f"{images}/*.png", "--output", str(output)]
    assert main([*args, "--model", str(tiny_bundle), "--max-error-rate", "0.5"]) == 0
    # A killed run's file lies in the table folder; readers must not see it.
    shutil.copy(
        next((output / "captions").glob("part-*.parquet")), output / "captions" / "x.parquet"
    )

    code = readme_python_block("- Reading the tables")
    printed = io.StringIO()
    names: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), names)
    finally:
        os.chdir(cwd)
    assert names["captions"].count_rows() == 5  # not the killed run's copy
    assert names["errors"].column("error_type").to_pylist() == ["UnidentifiedImage"]
    assert names["earlier"].num_rows == 5  # version 1: the run's commit
    assert "UnidentifiedImage" in printed.getvalue()
