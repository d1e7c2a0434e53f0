"""The dashboard in a real browser (Debian's chromium via Playwright) against the real stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from harness.broker import Broker
from harness.stack import Stack
from tests.support.fault_report import ARTIFACTS

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SLEEP = {
    "handler": "sleep",
    "threshold": 5,
    "burst_size": 4,
    "max_workers": 4,
    "idle_seconds": 4,
    "env": {"SLEEP_MS": "150"},
}


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(
        broker,
        tmp_path,
        {"sleep": SLEEP, "sales": {"max_workers": 2}},
        tick_seconds=0.5,
        env={"WORKER_HEARTBEAT_SECONDS": "0.5"},
    )
    created.start()
    yield created
    created.stop()


@pytest.fixture()
def page() -> Iterator[tuple[Page, list[str]]]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (./manage.sh test installs it)")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        created = context.new_page()
        created.on(
            "console",
            lambda message: (
                problems.append(f"console {message.type}: {message.text}")
                if message.type in ("error", "warning")
                else None
            ),
        )
        created.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        yield created, problems
        browser.close()


def card_value(page: Page, job_type: str, field: str) -> str:
    return page.locator(f'.card[data-type="{job_type}"] .stat.{field} .value').inner_text()


def test_live_dashboard_through_a_burst(stack: Stack, page: tuple[Page, list[str]], tmp_path: Path) -> None:
    browser_page, problems = page
    browser_page.goto(stack.login_link())
    browser_page.wait_for_selector('.card[data-type="sleep"]')
    assert "live" in browser_page.locator("#connection").inner_text()

    csv = tmp_path / "rows.csv"
    csv.write_text("n,name\n" + "".join(f"{i},row {i}\n" for i in range(60)))
    browser_page.select_option("#upload-type", "sleep")
    browser_page.set_input_files("#upload-file", str(csv))
    browser_page.click("#upload-button")
    browser_page.wait_for_function(
        "document.querySelector('#upload-answer').textContent.startsWith('Queued 60 rows')", timeout=15000
    )

    # Without a reload, the backlog and then the workers show up.
    browser_page.wait_for_function(
        "Number(document.querySelector('.card[data-type=\"sleep\"] .stat.workers .value').textContent.split('/')[0]) >= 2",
        timeout=15000,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    browser_page.screenshot(path=str(ARTIFACTS / "dashboard-burst.png"), full_page=True)
    assert "burst +4" in browser_page.locator("#events").inner_text()
    # The charts poll /api/history on their own clock (every history step, at most 5 s), so the
    # depth chart's second point may come after the workers figure the stream already moved.
    browser_page.wait_for_function(
        'Number(document.querySelector(\'.card[data-type="sleep"] [data-chart="depth"]\').dataset.points) >= 2',
        timeout=15000,
    )

    # A worker's log view shows its JSON log lines.
    browser_page.locator("#workers .log-button").first.click()
    browser_page.wait_for_function(
        "document.querySelector('#log-text').textContent.includes('\"worker_id\"')", timeout=30000
    )
    browser_page.click("#log-close")

    # After the idle period every worker is gone, again without a reload.
    browser_page.wait_for_function(
        "document.querySelector('.card[data-type=\"sleep\"] .stat.workers .value').textContent === '0/4'",
        timeout=60000,
    )
    assert card_value(browser_page, "sleep", "ready") == "0"
    assert "scale down" in browser_page.locator("#events").inner_text()

    assert problems == [], "no console errors or warnings through the whole burst"

    # A broken upload shows its error with the line number (the browser logs the 422 itself).
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    browser_page.set_input_files("#upload-file", str(bad))
    browser_page.click("#upload-button")
    browser_page.wait_for_function(
        "document.querySelector('#upload-answer').textContent.includes('line 3')", timeout=10000
    )
    assert "Refused (422)" in browser_page.locator("#upload-answer").inner_text()

    browser_page.set_viewport_size({"width": 390, "height": 844})
    assert browser_page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing widens the page on a phone"
    browser_page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    assert all("status of 422" in problem for problem in problems), problems


def test_dashboard_says_when_the_scaler_is_gone(stack: Stack, page: tuple[Page, list[str]]) -> None:
    browser_page, _ = page
    browser_page.goto(stack.login_link())
    browser_page.wait_for_selector('.card[data-type="sleep"]')
    stack.scaler.stop()
    browser_page.wait_for_function(
        "document.querySelector('#connection').textContent.includes('unreachable')", timeout=15000
    )
