"""``captioning explain IMAGE --model BUNDLE --out FILE.png`` end to end, and its errors."""

import math

import pytest
from PIL import Image

from captioning.cli.main import main
from captioning.explain.attention_figure import MAX_COLUMNS, PANEL_INCHES


def test_explain_writes_one_panel_per_word_plus_the_image(tiny_bundle, scenes, tmp_path, capsys):
    image = sorted((scenes / "images").iterdir())[1]
    out = tmp_path / "figures" / "attention.png"
    assert main(["explain", str(image), "--model", tiny_bundle, "--out", str(out)]) == 0

    caption, written = capsys.readouterr().out.rstrip("\n").split("\t")
    assert written == str(out)
    panels = len(caption.split()) + 1
    columns = min(MAX_COLUMNS, panels)
    rows = math.ceil(panels / columns)
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size == (
            round(columns * PANEL_INCHES * 100),
            round((rows * PANEL_INCHES + 0.5) * 100),
        )
        png.load()


@pytest.mark.parametrize(
    ("make_image", "message"),
    [
        (lambda path: path.write_bytes(b"not an image"), "not a recognised image"),
        (lambda path: None, "No such file or directory"),
    ],
)
def test_an_unreadable_image_is_one_line(tmp_path, capsys, make_image, message):
    image = tmp_path / "photo.png"
    make_image(image)
    code = main(["explain", str(image), "--model", "/no/bundle", "--out", str(tmp_path / "o.png")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"captioning explain: error: cannot read {image}")
    assert message in error and len(error.splitlines()) == 1


def test_a_bad_bundle_is_one_line(scenes, tmp_path, capsys):
    image = sorted((scenes / "images").iterdir())[0]
    (tmp_path / "bundle").mkdir()
    out = tmp_path / "x.png"
    code = main(["explain", str(image), "--model", str(tmp_path / "bundle"), "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "model bundle" in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_explain_has_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["explain", "--help"])
    assert exited.value.code == 0
    assert "--out" in capsys.readouterr().out
