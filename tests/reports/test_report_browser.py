"""The report in a real headless Chromium: loads clean, thumbnails decode, sort and filter work.

Uses Debian's /usr/bin/chromium through Playwright (no browser download). CI
installs it (.ci/run) and sets CAPTIONING_REQUIRE_SYSTEM_PACKAGES=1, so there a
missing browser fails instead of skipping. The screenshot goes to $CAPTIONING_TEST_ARTIFACTS
(default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from captioning.reports.run_report import ReportOptions, build_report
from tests.conftest import REQUIRE_SYSTEM_PACKAGES
from tests.reports.conftest import write_evaluation_csv

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_page():
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
        if REQUIRE_SYSTEM_PACKAGES:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def _cards(page) -> list[dict]:
    """The gallery in DOM order: score, caption, name, groups and whether it is shown."""
    return page.eval_on_selector_all(
        "#cards .card",
        """cards => cards.map(c => ({score: Number(c.dataset.score), caption: c.dataset.caption,
            name: c.dataset.name, groups: c.dataset.groups, visible: c.checkVisibility()}))""",
    )


@pytest.mark.timeout(180)
def test_report_works_in_headless_chromium(small_run, tmp_path, browser_page):
    page = browser_page
    # 4 + 4 + 4 of 17 captions: a sample, so the group selector is there too.
    options = ReportOptions(lowest=4, highest=4, random=4, seed=1, worst=3)
    evaluation = write_evaluation_csv(tmp_path / "per_image.csv", small_run)
    images = str(Path(small_run).parent.parent / "scenes" / "images")
    report = Path(
        build_report(small_run, str(tmp_path / "report"), options, str(evaluation), images)
    )
    problems, requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")

    assert problems == []
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests

    # Every image decoded; the two unreadable ones are placeholders, not broken imgs.
    decoded = "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
    images = page.eval_on_selector_all("#cards img", decoded)
    worst = page.eval_on_selector_all("#evaluation img", decoded)
    assert len(worst) == 3 and all(done and width > 0 for done, width, _ in worst)
    placeholders = page.locator("#cards .thumb.missing")
    cards = _cards(page)
    assert len(images) + placeholders.count() == len(cards) >= 8
    assert all(complete and width > 0 and height > 0 for complete, width, height in images)
    assert placeholders.count() == 2
    assert "cannot show image" in placeholders.first.inner_text()

    # Sorting reorders the gallery.
    initial = [card["score"] for card in cards]
    assert initial == sorted(initial)
    page.select_option("#sort", "score-desc")
    descending = [card["score"] for card in _cards(page)]
    assert descending == sorted(initial, reverse=True) and descending != initial
    page.select_option("#sort", "name")
    names = [card["name"] for card in _cards(page)]
    assert names == sorted(names)
    page.select_option("#sort", "score-asc")

    # The filter hides captions that do not match, case-insensitively.
    word = next(w for w in ("large", "small", "red", "blue") if _some_but_not_all(cards, w))
    page.fill("#filter", word.upper())
    for card in _cards(page):
        assert card["visible"] == (word in card["caption"].lower()), card
    shown = sum(card["visible"] for card in _cards(page))
    assert page.inner_text("#shown") == f"{shown} of {len(cards)} shown"
    page.fill("#filter", "no caption says this")
    assert not any(card["visible"] for card in _cards(page))
    assert page.is_visible("#no-match")
    page.fill("#filter", "")
    page.select_option("#group", "lowest")
    assert [c["visible"] for c in _cards(page)] == ["lowest" in c["groups"] for c in _cards(page)]
    page.select_option("#group", "")
    assert all(card["visible"] for card in _cards(page))

    artifacts = Path(os.environ.get("CAPTIONING_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"report screenshot: {screenshot}")
    assert problems == []


def _some_but_not_all(cards: list[dict], word: str) -> bool:
    matches = [word in card["caption"].lower() for card in cards]
    return any(matches) and not all(matches)
