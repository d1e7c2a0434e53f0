"""The dashboard's Uploads panel in a real browser (Debian's chromium) against the real stack and workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from harness.broker import Broker
from harness.stack import Stack
from tests.support.fault_report import ARTIFACTS
from tests.test_dashboard_browser import page  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    rec = {
        "handler": "tests.handlers.recorder",
        "threshold": 1,
        "max_workers": 1,
        "idle_seconds": 5,
        "max_attempts": 2,
        "retry_delay_seconds": 0.1,
        "env": {"RECORD_FILE": str(tmp_path / "record.jsonl")},
    }
    created = Stack(broker, tmp_path, {"rec": rec}, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    created.start()
    yield created
    created.stop()


def write_csv(path: Path, rows: int, sleep_ms: int, failing: set[int]) -> Path:
    lines = ["n,sleep_ms,fail_until"] + [f"{i},{sleep_ms},{99 if i in failing else 0}" for i in range(1, rows + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def upload_from_form(page: Page, path: Path) -> None:
    page.select_option("#upload-type", "rec")
    page.set_input_files("#upload-file", str(path))
    page.click("#upload-button")


def item(page: Page, name: str) -> str:
    return f'.upload[data-file="{name}"]'


def width(page: Page, selector: str) -> float:
    return float(page.eval_on_selector(selector, "node => parseFloat(node.style.width) || 0"))


def test_uploads_panel_follows_progress_and_its_buttons_work(
    stack: Stack, page: tuple[Page, list[str]], tmp_path: Path
) -> None:
    browser, problems = page
    browser.goto(stack.login_link())
    browser.wait_for_selector("#uploads")
    # Numbers for people, in the page's locale (en-US here): counts and rates grouped, rates whole from 10 up.
    big = {"rows": 1_234_567, "pending": 4_567, "dead": 1_000, "rows_per_second": 4155.57, "eta_seconds": 1}
    assert browser.evaluate("(item) => progressText(item)", big) == (
        "1,230,000 / 1,234,567 rows · 1,000 dead · 4,156 rows/s · ETA 1 s"
    )
    assert browser.evaluate("[number(1234567), Charts.count(2.345)]") == ["1,234,567", "2.3"], "cards, slow rates"

    upload_from_form(browser, write_csv(tmp_path / "slow.csv", 40, 100, {7, 9}))
    browser.wait_for_function("document.querySelector('#upload-answer').textContent.startsWith('Queued 40 rows')")
    followed = item(browser, "slow.csv")
    browser.wait_for_selector(f"{followed}.followed")
    succeeded = f"{followed} .part.succeeded"
    browser.wait_for_function(f"parseFloat(document.querySelector('{succeeded}').style.width) > 0", timeout=30000)
    first = width(browser, succeeded)
    browser.wait_for_function(
        f"parseFloat(document.querySelector('{succeeded}').style.width) > {first}", timeout=30000
    )  # progress moves without a reload
    assert "rows/s" in browser.locator("#upload-progress").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(path=str(ARTIFACTS / "dashboard-uploads.png"), full_page=True)

    browser.wait_for_selector(f'{followed} .badge:text-is("done")', timeout=60000)
    assert "2 dead" in browser.locator(f"{followed} .upload-progress").inner_text()
    with browser.expect_download() as download:
        browser.click(f"{followed} a.csv")
    report = Path(download.value.path()).read_text().splitlines()
    assert report[0] == "n,sleep_ms,fail_until,line,attempts,error"
    assert [line.split(",")[:4] for line in report[1:]] == [["7", "100", "99", "8"], ["9", "100", "99", "10"]]

    browser.click(f"{followed} button.replay")
    browser.wait_for_function("document.querySelector('#uploads-answer').textContent.includes('2 dead rows re-queued')")
    # Done again after the replay (the panel still shows the record from before it for a moment).
    browser.wait_for_function(
        f"document.querySelector('{followed} .badge').textContent === 'done'"
        f" && document.querySelector('{followed} .upload-progress').textContent.includes('replayed 1×')",
        timeout=60000,
    )
    assert width(browser, f"{followed} .part.dead") == pytest.approx(5.0)  # the two rows died again: counted once

    upload_from_form(browser, write_csv(tmp_path / "long.csv", 200, 100, set()))
    stopped = item(browser, "long.csv")
    browser.click(f"{stopped} button.cancel", timeout=30000)
    browser.wait_for_selector(f'{stopped} .badge:text-is("cancelled")')
    browser.wait_for_function(
        f"parseFloat(document.querySelector('{stopped} .part.cancelled').style.width) > 50", timeout=60000
    )
    assert browser.locator(f"{stopped} button.cancel").count() == 0

    upload_from_form(browser, write_csv(tmp_path / "left.csv", 200, 100, set()))
    left = item(browser, "left.csv")
    browser.wait_for_selector(left)
    stack.config_path.write_text(json.dumps({"other": {"queue": "queue_other"}}))  # "rec" leaves the config
    browser.wait_for_selector(f'{left} .badge:text-is("orphaned")', timeout=30000)
    assert (
        "job type 'rec' is no longer in the jobs config"
        in browser.locator(f"{left} [data-field=orphaned]").inner_text()
    )
    assert problems == [], problems
