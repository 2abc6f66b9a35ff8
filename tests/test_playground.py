"""The playground at ``/``, in a real browser: Playwright driving Debian's chromium.

The page runs a regex request on the embedded model through the live server, and the test
reads what it rendered: the particles, the posterior table, the settled text. Without a
browser (no ``playwright`` package, or no chromium: ``make test`` installs both where it
can) the test is skipped, and the skip says why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import regex

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from awrs.server import create_app
from awrs.server.testing import LiveServer

PATTERN = r"(yes|no), because [a-z ]{3,30}\."
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no browser for the playground test: none of {', '.join(CHROMIUM_NAMES)} is on PATH "
                "(make test installs Debian's chromium with apt-get where it can)")


@pytest.fixture(scope="module")
def page_and_server():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    executable = _chromium()
    import awrs

    with LiveServer(create_app(awrs.load_model(), limits={"max_particles": 16})) as live, \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        yield page, live
        browser.close()


@pytest.mark.model
def test_playground_runs_a_regex_request_and_draws_it(page_and_server):
    page, live = page_and_server
    page.goto(live.url + "/")
    assert page.title() == "awrs playground"
    page.select_option("#kind", "regex")
    page.fill("#constraint", PATTERN)
    page.fill("#prompt", "Is the sea salty? Answer yes or no, then say why.")
    page.fill("#particles", "4")
    page.fill("#max-tokens", "24")
    page.fill("#seed", "0")
    page.click("#run")
    page.wait_for_function("document.getElementById('status').textContent !== 'running…'", timeout=240_000)
    assert page.text_content("#status") == "done"

    rows = page.query_selector_all("#particles-table tbody tr")
    assert len(rows) == 4
    assert all(row.get_attribute("class").split()[0] in ("finished", "dead") for row in rows)
    finished = [row for row in rows if "finished" in row.get_attribute("class")]
    assert finished and all(regex.fullmatch(PATTERN, row.query_selector("td.text").inner_text().removesuffix("⏎EOS"))
                            for row in finished)
    assert all(span.get_attribute("title") for span in page.query_selector_all("#particles-table .tok"))

    posterior = [row.query_selector_all("td") for row in page.query_selector_all("#posterior-table tr.posterior-row")]
    assert posterior and all(regex.fullmatch(PATTERN, cells[0].inner_text()) for cells in posterior)
    probabilities = [float(cells[1].inner_text()) for cells in posterior]
    assert abs(sum(probabilities) - 1.0) < 1e-3
    assert page.text_content("#settled") == posterior[0][0].inner_text()  # the streamed text is choice 0
    assert "log P(constraint)" in page.text_content("#log-ml")
    shot = os.environ.get("AWRS_PLAYGROUND_SCREENSHOT")
    if shot:
        page.screenshot(path=str(Path(shot)), full_page=True)
