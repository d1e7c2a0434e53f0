"""The dashboard's charts in Chromium against the real stack, and its Simulate view.

Live: axes with tick labels, legend values, hover, the window selector, throughput and cost per type and
scaling markers, checked in the DOM and in a screenshot's pixels. Simulate: the example summary.json
(tests/data/) drawn as its cost table, timelines, wait histograms and Pareto front; a bad file refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page

from harness.broker import Broker
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support.fault_report import ARTIFACTS
from tests.test_dashboard_browser import SLEEP, page  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser
EXAMPLE = Path(__file__).parent / "data" / "summary-example.json"
ROWS = 40
#: The series colours of charts.js (queue depth, workers) and the axes' ink.
QUEUE, WORKERS, AXIS_INK = (0x25, 0x63, 0xEB), (0xD9, 0x77, 0x06), (0x5D, 0x6B, 0x78)
CLOCK = re.compile(r"^\d\d:\d\d(:\d\d)?$")


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    created = Stack(
        broker,
        tmp_path_factory.mktemp("charts"),
        {"sleep": SLEEP},
        tick_seconds=0.5,
        env={"WORKER_HEARTBEAT_SECONDS": "0.5"},
    )
    created.start()
    yield created
    created.stop()


def history(stack: Stack, window: int | str = 300) -> httpx.Response:
    return httpx.get(f"{stack.scaler_url}/api/history", params={"window": window}, headers=stack.auth_headers())


def ticks(chart: Locator, axis: str) -> list[str]:
    return (chart.get_attribute(f"data-{axis}-ticks") or "").split("|")


def minutes_spanned(labels: list[str]) -> int:
    """Minutes from the first clock label of an axis to its last."""
    minutes = [int(label[:2]) * 60 + int(label[3:5]) for label in labels]
    return (minutes[-1] - minutes[0]) % 1440


def legend(chart: Locator) -> dict[str, str]:
    """The legend's label -> value, as the reader sees it."""
    labels = chart.locator(".u-legend .u-label").all_inner_texts()
    values = chart.locator(".u-legend .u-value").all_inner_texts()
    return dict(zip(labels, values, strict=True))


def coloured_pixels(path: Path, box: dict[str, float], colour: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels of the screenshot inside `box` within `tolerance` of `colour` on every channel."""
    image = Image.open(path).convert("RGB")
    area = image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    return sum(
        count
        for count, pixel in area.getcolors(maxcolors=area.width * area.height)
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))
    )


def assert_drawn(browser_page: Page, chart: Locator, name: str, colours: list[tuple[int, int, int]]) -> None:
    """A screenshot of the page shows this chart's axes and series: its canvas has their colours."""
    chart.scroll_into_view_if_needed()
    path = ARTIFACTS / name
    ARTIFACTS.mkdir(exist_ok=True)
    browser_page.screenshot(path=str(path))
    box = chart.locator("canvas").bounding_box()
    assert box and box["width"] > 150 and box["height"] > 100, box
    for colour in [AXIS_INK, *colours]:
        assert coloured_pixels(path, box, colour) > 30, f"{name}: too few pixels of {colour} in the chart"


def sweep(browser_page: Page, chart: Locator, steps: int = 60, start: float = 0.0) -> list[tuple[dict[str, str], str]]:
    """Move the mouse across the plot from `start` (a fraction of its width); the legend and marker note at each step."""
    chart.scroll_into_view_if_needed()
    box = chart.locator(".u-over").bounding_box()
    assert box
    seen = []
    for i in range(steps):
        x = box["x"] + 1 + (box["width"] - 3) * (start + (1 - start) * i / steps)  # whole pixels inside the plot
        browser_page.mouse.move(x, box["y"] + box["height"] / 2)
        seen.append((legend(chart), chart.locator(".chart-note").inner_text()))
    browser_page.mouse.move(0, 0)
    return seen


def test_live_charts_axes_values_hover_markers_and_windows(stack: Stack, page: tuple[Page, list[str]]) -> None:
    browser_page, problems = page
    browser_page.context.set_extra_http_headers(stack.auth_headers())
    browser_page.goto(stack.scaler_url)
    depth = browser_page.locator('.card[data-type="sleep"] [data-chart="depth"]')
    flow = browser_page.locator('.card[data-type="sleep"] [data-chart="flow"]')
    depth.locator("canvas").wait_for()
    assert stack.upload(b"n\n" + b"".join(b"%d\n" % i for i in range(ROWS)), "sleep").status_code == 200

    # Throughput comes from the workers' heartbeat counters: every row once, whatever the sampling.
    totals = wait_until(
        lambda: (t := history(stack).json()["job_types"]["sleep"]["totals"])["rows"] == ROWS and t,
        timeout=60,
        what=f"{ROWS} rows handled in the history",
    )
    stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=60, what="every worker gone after idle_seconds")
    lifetimes = [w["finished_at"] - w["started_at"] for w in stack.status()["workers"] if w["finished_at"]]
    totals = history(stack).json()["job_types"]["sleep"]["totals"]
    # Cost is the integral of live workers, sampled at each tick (0.5 s): off by at most a tick per start and stop.
    assert abs(totals["worker_seconds"] - sum(lifetimes)) <= 2 * 0.5 * len(lifetimes), (totals, lifetimes)

    # The charts show it with axes, values and markers, without a reload.
    browser_page.wait_for_function(
        'document.querySelector(\'.card[data-type="sleep"] [data-chart="depth"]\').dataset.markers >= 2'
    )
    for chart in (depth, flow):
        assert all(CLOCK.match(label) for label in ticks(chart, "x")), ticks(chart, "x")
        assert len(ticks(chart, "x")) >= 3
        for axis in ("y", "y2"):
            assert len(ticks(chart, axis)) >= 2 and all(re.fullmatch(r"[\d.]+k?", v) for v in ticks(chart, axis))
    assert list(legend(depth)) == ["time", "queue", "workers", "desired"]
    wait_until(lambda: legend(depth)["workers"] == "0", timeout=10, what="the legend's latest workers to be 0")
    assert legend(depth)["time"] == "latest"
    cost = browser_page.evaluate(f"Charts.number({totals['worker_seconds']})")
    browser_page.wait_for_function(
        f'[...document.querySelectorAll(\'.card[data-type="sleep"] [data-chart="flow"] .u-value\')]'
        f".some((node) => node.textContent === {json.dumps(cost)})"
    )
    assert legend(flow)["worker-s"] == cost, "the cost legend is the window's worker-seconds"
    assert_drawn(browser_page, depth, "dashboard-charts.png", [QUEUE, WORKERS])

    # Hover: the legend shows the time and values under the cursor, and a marker's reason near it.
    hovered = sweep(browser_page, depth, start=0.8)  # the last minute: the stack is new, the burst is recent
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", values["time"]) for values, _ in hovered)
    series = history(stack).json()["job_types"]["sleep"]["series"]
    assert max(int(values["workers"]) for values, _ in hovered) == max(series["workers"]) >= 2
    assert max(int(values["queue"]) for values, _ in hovered) > 0
    ups = [event["reason"] for event in stack.status()["events"] if event["direction"] == "up"]
    notes = {note for _, note in hovered}
    assert any(f"sleep: {reason}" in note for note in notes for reason in ups), (notes, ups)
    rates = [float(values["rows/s"]) for values, _ in sweep(browser_page, flow, start=0.8)]
    assert max(rates) > 0

    # The window selector asks the scaler for another window and redraws the axes for it.
    buttons = browser_page.locator("#window-buttons button")
    assert buttons.all_inner_texts() == ["5 min", "1 h", "6 h"]
    assert 1 <= minutes_spanned(ticks(depth, "x")) <= 5
    with browser_page.expect_response(lambda response: "window=3600" in response.url):
        buttons.nth(1).click()
    assert buttons.nth(1).get_attribute("aria-pressed") == "true"
    assert "last 1 h" in browser_page.locator("#window-status").inner_text()
    wait_until(lambda: minutes_spanned(ticks(depth, "x")) >= 30, timeout=10, what="an hour's axis on the chart")
    assert int(depth.get_attribute("data-markers")) >= 2, "the events are markers in the longer window too"

    answer = history(stack, 5)
    assert answer.status_code == 400 and "window must be one of 300, 3600, 21600" in answer.json()["error"]
    assert history(stack, 21600).json()["step"] == 60

    browser_page.set_viewport_size({"width": 390, "height": 844})
    # The charts follow their cards' width (a ResizeObserver), so nothing widens the page on a phone.
    browser_page.wait_for_function("document.documentElement.scrollWidth <= 390", timeout=5000)
    assert browser_page.locator('[data-chart="depth"] canvas').bounding_box()["width"] < 390
    browser_page.screenshot(path=str(ARTIFACTS / "dashboard-charts-phone.png"), full_page=True)
    assert problems == []


def test_simulate_view_draws_a_summary(stack: Stack, page: tuple[Page, list[str]], tmp_path: Path) -> None:
    browser_page, problems = page
    browser_page.context.set_extra_http_headers(stack.auth_headers())
    browser_page.goto(f"{stack.scaler_url}/#simulate")
    assert browser_page.locator("#live-view").is_hidden()
    summary = json.loads(EXAMPLE.read_text())
    policies = summary["policies"]
    browser_page.set_input_files("#sim-file", str(EXAMPLE))
    browser_page.locator("#sim-pareto canvas").wait_for()
    assert browser_page.locator("#sim-answer").inner_text() == (
        f"{EXAMPLE.name}: {len(policies)} policies, a Pareto front of {len(summary['pareto'])} settings."
    )
    assert summary["trace"]["attribution"] in browser_page.locator("#sim-attribution").inner_text()

    for name, policy in policies.items():
        cells = browser_page.locator(f'#sim-costs tr[data-policy="{name}"] td').all_inner_texts()
        assert cells[0] == browser_page.evaluate(f"Charts.number({policy['total']['worker_seconds']})")
        assert cells[3] == browser_page.evaluate(f"Charts.number({policy['total']['wait_seconds']['p95']})") + " s"
    assert browser_page.locator("#sim-types tbody tr").count() == sum(len(p["job_types"]) for p in policies.values())

    workers = browser_page.locator("#sim-workers .chart")
    points = len(next(iter(policies.values()))["timeline"]["t"])
    assert workers.get_attribute("data-points") == str(points)
    assert ticks(workers, "x")[0] == "0:00" and all(re.fullmatch(r"\d+:\d\d(:\d\d)?", v) for v in ticks(workers, "x"))
    assert list(legend(workers)) == ["trace time", *policies]
    hovered = sweep(browser_page, workers, steps=20)
    assert any(values["keda"] != values["project"] for values, _ in hovered[1:])
    assert_drawn(browser_page, workers, "simulate-workers.png", [QUEUE, WORKERS])

    histograms = browser_page.locator("#sim-wait .chart")
    assert histograms.count() == len(policies)
    edges = next(iter(policies.values()))["wait_histogram"]["edges"]
    assert ticks(histograms.first, "x") == [str(edge) for edge in edges]

    pareto = browser_page.locator("#sim-pareto .chart")
    assert pareto.get_attribute("data-points") == str(len(summary["pareto"]))
    assert browser_page.locator("#sim-pareto-table tbody tr").count() == len(summary["pareto"])
    hovered = sweep(browser_page, pareto, steps=20)
    assert any("with threshold=" in values["p95 wait"] for values, _ in hovered)
    browser_page.screenshot(path=str(ARTIFACTS / "simulate.png"), full_page=True)
    browser_page.set_viewport_size({"width": 390, "height": 844})
    browser_page.wait_for_function("document.documentElement.scrollWidth <= 390", timeout=5000)
    browser_page.screenshot(path=str(ARTIFACTS / "simulate-phone.png"), full_page=True)
    header = browser_page.locator("#sim-costs th[scope=col]").evaluate_all("cells => cells.map(c => c.offsetWidth > 0)")
    assert all(header), "every column of the cost table keeps its heading on a phone"

    # Without a sweep there is no Pareto front, and no panel for it.
    plain = {key: value for key, value in summary.items() if key != "pareto"}
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    browser_page.set_input_files("#sim-file", str(tmp_path / "plain.json"))
    browser_page.wait_for_function("document.querySelector('#sim-answer').textContent.startsWith('plain.json')")
    assert browser_page.locator("#sim-answer").inner_text() == f"plain.json: {len(policies)} policies."
    assert browser_page.locator("#sim-pareto-panel").is_hidden()

    # A file that is not a summary is refused, saying what is wrong and where.
    broken = json.loads(EXAMPLE.read_text())
    broken["policies"]["keda"]["timeline"]["workers"].pop()
    bad = tmp_path / "bad-summary.json"
    bad.write_text(json.dumps(broken))
    browser_page.set_input_files("#sim-file", str(bad))
    browser_page.wait_for_function("document.querySelector('#sim-answer').textContent.includes('bad-summary.json')")
    assert browser_page.locator("#sim-answer").inner_text() == (
        f"bad-summary.json: not a simulator summary: policies.keda.timeline.workers has {points - 1} points"
        f" but t has {points}"
    )
    assert browser_page.locator("#sim-result").is_hidden()
    assert problems == []
