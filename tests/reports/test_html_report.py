"""The report's content: summary, gallery rows, escaping, errors, evaluation, and the CLI."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioning import run_layout, tables
from captioning.cli.main import main
from captioning.errors import UserError
from captioning.reports.run_report import ReportOptions, build_report
from tests.conftest import GCS_BUCKET
from tests.reports.conftest import (
    RUN_ID,
    UNCOMMITTED_CAPTION,
    caption_row,
    error_row,
    write_evaluation_csv,
    write_run,
)


class _Elements(HTMLParser):
    """Every start tag with its attributes, to check the page without regexes over HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, css_class: str | None = None) -> list[dict]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and (css_class is None or css_class in attrs.get("class", "").split())
        ]


def _parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


def test_report_of_a_small_run(small_run, tmp_path):
    path = build_report(small_run, str(tmp_path / "report"))
    html = Path(path).read_text()
    page = _parse(html)
    cards = page.find("figure", "card")
    assert len(cards) == 17, "a run this small is shown whole"
    scores = [float(card["data-score"]) for card in cards]
    assert scores == sorted(scores)
    assert {"data-caption", "data-name", "data-groups"} <= set(cards[0])
    # 15 readable images are embedded; the overwritten and the deleted one are placeholders.
    images = page.find("img")
    assert len(images) == 15
    assert all(img["src"].startswith("data:image/jpeg;base64,") for img in images)
    assert len(page.find("div", "missing")) == 2
    assert "UnidentifiedImage: not a recognised image" in html
    assert "cannot read file" in html
    # Summary, error counts and error rows.
    assert "20260101T000000-abcdef" in html and "sha256-test" in html
    assert re.search(r"<td>decode</td><td>UnidentifiedImage</td><td class=\"num\">1</td>", html)
    assert re.search(r"<td>read</td><td>FileNotFoundError</td><td class=\"num\">1</td>", html)
    assert html.count("2026-01-01 00:00:00 UTC") == 3
    assert "an awkward thin file" in html and "1 other beam" in html
    # Only the committed snapshot: not the data file a killed run left in the table folder.
    assert UNCOMMITTED_CAPTION not in html
    assert "<th>Table versions</th><td>captions 1, errors 1</td>" in html
    assert "Alert" not in html


def test_nothing_in_the_page_reaches_the_network(small_run, tmp_path):
    html = Path(build_report(small_run, str(tmp_path / "report"))).read_text()
    page = _parse(html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "srcset"):
            assert name not in attrs or attrs[name].startswith("data:"), (tag, attrs)
    assert not page.find("link") and all("src" not in attrs for attrs in page.find("script"))
    assert "@import" not in html and "url(" not in html


def test_text_from_the_tables_is_escaped(tmp_path):
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    output = write_run(
        str(tmp_path / "run"),
        [caption_row(f"/nowhere/{hostile}.png", hostile, -0.5)],
        [error_row(f"/nowhere/{hostile}", "decode", hostile, hostile)],
        shards=1,
    )
    html = Path(build_report(output, str(tmp_path / "report"))).read_text()
    assert "<script>alert" not in html
    assert html.count("<script>") == 1, "only the page's own script"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = _parse(html)
    assert page.find("figure", "card")[0]["data-caption"] == hostile, "attribute round-trips"
    assert not page.find("img"), "the hostile img tag is text, not an element"
    assert not [attrs for _, attrs in page.tags if "onerror" in attrs]


def test_large_runs_are_sampled_and_errors_capped(tmp_path):
    captions = [caption_row(f"/nowhere/{i}.png", f"caption {i}", -i / 100) for i in range(300)]
    errors = [error_row(f"/nowhere/e{i}.png", "read", "NotFound", "gone") for i in range(30)]
    output = write_run(str(tmp_path / "run"), captions, errors, shards=3, summary=False)
    options = ReportOptions(lowest=10, highest=5, random=20, max_errors=12)
    html = Path(build_report(output, str(tmp_path / "report"), options)).read_text()
    page = _parse(html)
    cards = page.find("figure", "card")
    groups = [set(card["data-groups"].split()) for card in cards]
    assert sum("lowest" in g for g in groups) == 10 and sum("highest" in g for g in groups) == 5
    assert sum("random" in g for g in groups) == 20 and len(cards) <= 35
    lowest = {card["data-name"] for card in cards if "lowest" in card["data-groups"]}
    assert lowest == {f"{i}.png" for i in range(290, 300)}
    assert "of 300 captions: the 10 lowest-scoring, the 5 highest-scoring and 20 at random" in html
    assert "30 error rows; the first 12 are listed" in html
    assert html.count('<td class="mono" title="/nowhere/e') == 12
    assert '<td>read</td><td>NotFound</td><td class="num">30</td>' in html
    assert "n/a (no summary file)" in html


def test_thumbnails_can_be_written_beside_the_html(small_run, tmp_path):
    out = tmp_path / "report"
    build_report(small_run, str(out), ReportOptions(thumbnails="files", thumbnail_size=64))
    page = _parse((out / "index.html").read_text())
    sources = [img["src"] for img in page.find("img")]
    assert len(sources) == 15 and all(src.startswith("thumbnails/") for src in sources)
    assert all((out / src).stat().st_size > 0 for src in sources)
    assert len(list((out / "thumbnails").iterdir())) == 15


def test_evaluation_adds_the_worst_images_by_cider(small_run, tmp_path):
    evaluation = write_evaluation_csv(tmp_path / "per_image.csv", small_run)
    images_dir = str(Path(small_run).parent.parent / "scenes" / "images")
    out = tmp_path / "report"
    build_report(
        small_run, str(out), ReportOptions(worst=3), str(evaluation), evaluation_images=images_dir
    )
    html = (out / "index.html").read_text()
    section = html[html.index('<section id="evaluation">') :]
    section = section[: section.index("</section>")]
    assert [float(v) for v in re.findall(r'<td class="num">([\d.]+)</td>', section)] == [
        0.5,
        1.0,
        1.5,
    ]
    assert "<li>reference 5 a</li><li>reference 5 b</li>" in section
    assert "of 7 evaluated images (mean CIDEr 2.786)" in section
    assert section.count("<img ") == 3, "relative names resolve under --evaluation-images"


def test_a_folder_without_tables_is_a_one_line_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="no caption run at"):
        build_report(str(tmp_path / "nothing"), str(tmp_path / "report"))
    assert main(["report", "--captions", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "captioning report: error: no caption run at" in capsys.readouterr().err


def test_a_prefix_of_the_layout_before_tables_says_the_layout_changed(tmp_path, capsys):
    """``--captions PREFIX`` of a run made before tables: PREFIX-*.parquet beside it."""
    prefix = tmp_path / "old" / "captions"
    prefix.parent.mkdir()
    rows = [caption_row("/nowhere/a.png", "a caption", -0.5)]
    pq.write_table(
        pa.Table.from_pylist(rows, schema=run_layout.CAPTIONS_SCHEMA),
        f"{prefix}-{RUN_ID}-00000-of-00001.parquet",
    )
    assert main(["report", "--captions", str(prefix), "--out", str(tmp_path / "r")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("captioning report: error: ")
    assert "layout changed" in line and "--output DIR" in line
    assert not (tmp_path / "r").exists()


def test_a_table_folder_is_refused_naming_the_run_folder(small_run, tmp_path):
    with pytest.raises(UserError, match=f"pass --captions {re.escape(small_run)}$"):
        build_report(run_layout.captions_table(small_run), str(tmp_path / "report"))


def test_an_earlier_version_of_the_tables_can_be_reported(tmp_path, capsys):
    """Time travel: --version N shows captions version N and the errors its run committed;
    the summary of a later run is left out, not shown beside the wrong tables."""
    output = str(tmp_path / "run")
    write_run(
        output,
        [caption_row(f"/nowhere/first{i}.png", f"first run {i}", -0.1) for i in range(3)],
        [error_row("/nowhere/first.png", "read", "FirstRunError", "gone")],
        run_id="20260101T000000-first1",
    )
    first = tables.version(run_layout.captions_table(output))
    write_run(
        output,
        [caption_row(f"/nowhere/second{i}.png", f"second run {i}", -0.2) for i in range(5)],
        [error_row("/nowhere/second.png", "read", "SecondRunError", "gone")],
        run_id="20260102T000000-second",
    )
    latest = Path(build_report(output, str(tmp_path / "latest"))).read_text()
    assert len(_parse(latest).find("figure", "card")) == 5 and "first run" not in latest
    assert "SecondRunError" in latest and "20260102T000000-second" in latest

    out = tmp_path / "earlier"
    code = main(["report", "--captions", output, "--out", str(out), "--version", str(first)])
    assert code == 0
    html = (out / "index.html").read_text()
    assert len(_parse(html).find("figure", "card")) == 3 and "second run" not in html
    assert "FirstRunError" in html and "SecondRunError" not in html
    assert f"captions table as of version {first} (latest: {first + 1})" in html
    assert "summary.json is of run 20260102T000000-second" in html
    assert "n/a (no summary file)" in html

    capsys.readouterr()
    assert main(["report", "--captions", output, "--out", str(out), "--version", "9"]) == 2
    assert f"has versions 0 to {first + 1}" in capsys.readouterr().err


def test_the_runs_alert_is_shown_first(tmp_path):
    output = write_run(
        str(tmp_path / "run"),
        [caption_row("/nowhere/a.png", "a caption", -0.5)],
        [error_row(f"/nowhere/e{i}.png", "read", "NotFound", "gone") for i in range(3)],
    )
    path = Path(run_layout.summary_path(output))
    summary = json.loads(path.read_text())
    summary |= {
        "captions_committed": False,
        "alert": "3 of 4 inputs failed (error rate 0.750 > --max-error-rate 0.05); "
        "the earlier captions were kept",
    }
    path.write_text(json.dumps(summary))
    html = Path(build_report(output, str(tmp_path / "report"))).read_text()
    alert = html.index('<p class="alert" role="alert">')
    assert alert < html.index('<div class="tiles">')
    assert "error rate 0.750 &gt; --max-error-rate 0.05" in html
    assert "<th>Captions committed</th><td>no: the earlier captions were kept</td>" in html


def test_evaluation_file_without_the_columns_is_refused(small_run, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption\na.png,x\n")
    with pytest.raises(UserError, match="has no column references, cider"):
        build_report(small_run, str(tmp_path / "report"), evaluation=str(bad))


def test_cli_writes_the_report_and_prints_its_path(small_run, tmp_path, capsys):
    out = tmp_path / "cli_report"
    flags = ["--lowest", "2", "--highest", "2", "--random", "2", "--thumbnails", "files"]
    assert main(["report", "--captions", small_run, "--out", str(out), *flags]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    page = _parse((out / "index.html").read_text())
    assert len(page.find("figure", "card")) <= 6
    assert all(img["src"].startswith("thumbnails/") for img in page.find("img"))


def test_a_run_of_gs_images_gives_the_same_report_written_to_gs(small_run, tmp_path, gcs):
    """Images and the report on gs:// (a local GCS emulator), the run's tables local.

    delta-rs reaches gs:// through the GCS XML API, which gcp-storage-emulator does not
    implement, so a Delta table cannot live on this emulator; with real GCS the report
    reads gs:// tables through the same ``captioning.tables`` calls. What is on gs:// here
    is what the report reads and writes through ``captioning.storage``: the images it
    makes thumbnails of, and the report with its thumbnail files."""
    local = _parse(Path(build_report(small_run, str(tmp_path / "local"))).read_text())
    root = Path(small_run).parent.parent
    captions = tables.read(run_layout.captions_table(small_run)).to_pylist()
    errors = tables.read(run_layout.errors_table(small_run)).to_pylist()
    for row in captions:
        image = Path(row["image_uri"])
        assert image.is_relative_to(root), image
        if image.exists():  # deleted.png stays missing
            gcs.blob(f"images/{image.name}").upload_from_filename(str(image))
        row["image_uri"] = f"gs://{GCS_BUCKET}/images/{image.name}"
    output = write_run(str(tmp_path / "gs_images_run"), captions, errors)
    out = f"gs://{GCS_BUCKET}/reports/r1"
    path = build_report(output, out, ReportOptions(thumbnails="files"))
    assert path == f"{out}/index.html"
    remote_html = gcs.blob("reports/r1/index.html").download_as_text()
    remote = _parse(remote_html)

    def cards(page):  # equal scores may come in either order
        return sorted((c["data-score"], c["data-name"]) for c in page.find("figure", "card"))

    assert cards(remote) == cards(local)
    scores = [float(c["data-score"]) for c in remote.find("figure", "card")]
    assert scores == sorted(scores)
    assert len(remote.find("img")) == 15 and "20260101T000000-abcdef" in remote_html
    assert len(remote.find("div", "missing")) == 2
    written = {blob.name for blob in gcs.client.list_blobs(GCS_BUCKET, prefix="reports/r1/")}
    assert {f"reports/r1/{img['src']}" for img in remote.find("img")} <= written


def test_file_uris_are_local_paths(small_run, tmp_path):
    out = f"file://{tmp_path}/remote"
    path = build_report(f"file://{small_run}", out, ReportOptions(thumbnails="files"))
    assert path == f"{out}/index.html"
    assert (tmp_path / "remote" / "index.html").is_file()


def test_report_has_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["report", "--help"])
    assert exited.value.code == 0
    assert "usage: captioning report" in capsys.readouterr().out
