"""The dashboard's fleet controls in a real browser (Debian's chromium via Playwright) against the real stack:
the budget panel, pause and resume buttons, and a failing type in red with the worker's error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from harness.broker import Broker
from harness.stack import Stack
from tests.support.fault_report import ARTIFACTS
from tests.test_dashboard_browser import page  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser
SLEEP = {"handler": "sleep", "threshold": 2, "max_workers": 2, "idle_seconds": 30, "env": {"SLEEP_MS": "300"}}
SEED = {"queue": "queue_new", "image": "worker-new:latest", "threshold": 10}
RED = "rgb(180, 35, 24)"


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(
        broker,
        tmp_path,
        {"sleep": SLEEP, "new-job": SEED},
        env={"WORKER_HEARTBEAT_SECONDS": "0.5", "SCALER_MAX_TOTAL_WORKERS": "3"},
    )
    created.start()
    yield created
    created.stop()


def card(name: str) -> str:
    return f'.card[data-type="{name}"]'


def wait_js(browser_page: Page, expression: str, timeout: float = 20000) -> None:
    browser_page.wait_for_function(expression, timeout=timeout)


def test_budget_pause_resume_and_a_failing_type(stack: Stack, page: tuple[Page, list[str]]) -> None:  # noqa: F811
    browser_page, problems = page
    stack.upload(b"n\n" + b"".join(b"%d\n" % i for i in range(400)), "sleep").raise_for_status()
    stack.upload(b"n\n1\n2\n", "new-job").raise_for_status()
    browser_page.goto(stack.login_link())
    browser_page.wait_for_selector(card("sleep"))

    # The type without a handler: red, with the error in the worker's words, and a retry button.
    failing = browser_page.locator(f"{card('new-job')}.state-failing")
    failing.wait_for(timeout=20000)
    assert "no handler module workers.new_job.handler" in failing.locator(".reason").inner_text()
    assert failing.evaluate("node => getComputedStyle(node).borderLeftColor") == RED
    assert failing.locator(".badge").evaluate("node => getComputedStyle(node).color") == RED
    assert failing.locator("button.retry").count() == 1

    # The budget: used / total, by type, stacked over time.
    wait_js(browser_page, f"document.querySelector('{card('sleep')} .stat.workers .value').textContent === '2/2'")
    assert not browser_page.locator("#budget-panel").is_hidden()
    wait_js(browser_page, "document.querySelector('#budget-text').textContent.startsWith('2 / 3 workers')")
    assert browser_page.locator('#budget-bar .budget-part[data-type="sleep"]').inner_text() == "2"
    wait_js(  # the stacked chart's legend: the latest workers held by each type, not the running total
        browser_page,
        "[...document.querySelectorAll('#budget-chart .u-series')].some((s) => "
        "s.querySelector('.u-label').textContent === 'sleep' && s.querySelector('.u-value').textContent === '2')",
    )
    assert browser_page.locator(f"{card('sleep')} .stat.desired .value").inner_text() == "2 / 2"
    ARTIFACTS.mkdir(exist_ok=True)
    browser_page.screenshot(path=str(ARTIFACTS / "dashboard-fleet.png"), full_page=True)

    # Pause: the workers finish their row and stop, the rows stay; resume brings them back.
    browser_page.click(f"{card('sleep')} button.pause")
    wait_js(browser_page, "document.querySelector('#control-answer').textContent === 'sleep: pause accepted.'")
    wait_js(browser_page, f"document.querySelector('{card('sleep')}').dataset.control === 'paused'")
    wait_js(browser_page, f"document.querySelector('{card('sleep')} .stat.workers .value').textContent === '0/2'")
    assert browser_page.locator(f"{card('sleep')} .badge").inner_text() == "paused"
    assert int(browser_page.locator(f"{card('sleep')} .stat.ready .value").inner_text()) > 0
    browser_page.click(f"{card('sleep')} button.resume")
    wait_js(browser_page, f"document.querySelector('{card('sleep')}').dataset.control === 'run'")
    wait_js(
        browser_page,
        f"Number(document.querySelector('{card('sleep')} .stat.workers .value').textContent.split('/')[0]) > 0",
    )
    browser_page.set_viewport_size({"width": 390, "height": 844})
    assert browser_page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing widens the page on a phone"
    assert problems == [], "no console errors or warnings"
