"""An interrupted upload in the dashboard's Uploads panel (real chromium, real stack): its state, its hint, and
following the hint (the same file sent again from the form) finishes the same record."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from harness.broker import Broker
from harness.stack import Stack
from tests.support.proxy import CuttableProxy
from tests.test_dashboard_browser import page  # noqa: F401 - the fixture
from tests.test_uploads_browser import item, upload_from_form

pytestmark = pytest.mark.browser


def test_an_interrupted_upload_shows_its_hint_and_sending_the_file_again_finishes_it(
    broker: Broker, tmp_path: Path, page
) -> None:
    browser, problems = page
    proxy = CuttableProxy()
    env = {"RABBITMQ_URL": proxy.url(quote(broker.vhost, safe="")), "RABBITMQ_HEARTBEAT_SECONDS": "2"}
    rec = {"handler": "tests.handlers.noop", "threshold": 1, "max_workers": 1, "idle_seconds": 5}
    stack = Stack(broker, tmp_path, {"rec": rec}, env=env).start()
    try:
        browser.goto(stack.login_link())
        browser.wait_for_selector("#uploads")
        csv_file = tmp_path / "cut.csv"
        csv_file.write_text("n\n" + "".join(f"{i}\n" for i in range(1, 31)))
        proxy.cut()  # the producer cannot reach RabbitMQ: publishing stops before the first row is confirmed
        upload_from_form(browser, csv_file)
        browser.wait_for_function("document.querySelector('#upload-answer').textContent.startsWith('Refused (503)')")
        shown = item(browser, "cut.csv")
        browser.wait_for_selector(f'{shown} .badge:text-is("interrupted")', timeout=30000)
        hint = browser.locator(f'{shown} [data-field="interrupted-hint"]').inner_text()
        assert hint.startswith("Send the file again with the same key"), hint
        assert "at 0 of 30 rows" in browser.locator(f'{shown} [data-field="interrupted"]').inner_text()
        assert browser.locator(f"{shown} button.cancel").count() == 1, "an interrupted upload can be cancelled"

        proxy.restore()
        upload_from_form(browser, csv_file)
        browser.wait_for_function(
            "document.querySelector('#upload-answer').textContent.startsWith('Queued 30 rows')", timeout=60000
        )
        browser.wait_for_selector(f'{shown} .badge:text-is("done")', timeout=60000)
        assert browser.locator(".upload").count() == 1, "the same record, not a second upload"
        assert browser.locator(f'{shown} [data-field="interrupted-hint"]').count() == 0
        # The 503 answer of the first try is the one console error the page may show (fetch logs it).
        assert [p for p in problems if "503" not in p] == [], problems
    finally:
        stack.stop()
        proxy.close()
