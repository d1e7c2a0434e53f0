"""Fleet controls with real processes: a worker budget shared by priority, pause/resume surviving a restart,
and the HTTP contract of the control endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from harness.broker import Broker
from harness.processes import REPO
from harness.stack import Stack
from harness.waiting import wait_until

BULK = {"handler": "sleep", "threshold": 0, "burst_size": 4, "max_workers": 4, "idle_seconds": 3, "priority": 0}
URGENT = {
    "handler": "sleep",
    "threshold": 0,
    "burst_size": 2,
    "max_workers": 2,
    "idle_seconds": 3,
    "priority": 10,
    "env": {"SLEEP_MS": "100"},
}
FAST = {"WORKER_HEARTBEAT_SECONDS": "0.5"}


def rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


def worker_processes(stack: Stack) -> int:
    """Worker processes alive now: by the backend's records, and by the scaler's descendants running a worker."""
    recorded = len(stack.live_worker_pids())
    try:
        children = psutil.Process(stack.scaler.pid).children(recursive=True)
    except psutil.Error:
        children = []
    running = 0
    for child in children:
        try:
            if "workers" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                running += 1
        except psutil.Error:
            continue
    return max(recorded, running)


class Sampler:
    """Samples a number on a thread until stopped; keeps the peak."""

    def __init__(self, measure) -> None:
        self.measure = measure
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            self.samples += 1
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def control(stack: Stack, action: str, job_type: str, token: str | None = None) -> httpx.Response:
    """POST a control with the stack's token, or with `token` ("": none at all)."""
    headers = stack.auth_headers() if token is None else {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{stack.scaler_url}/api/job-types/{job_type}/{action}", headers=headers, timeout=10)


def test_a_higher_priority_type_takes_budget_slots_by_graceful_stops(broker: Broker, tmp_path: Path) -> None:
    record = tmp_path / "bulk.jsonl"
    stack = Stack(
        broker,
        tmp_path,
        {"bulk": {**BULK, "handler": "tests.handlers.recorder", "env": {"RECORD_FILE": str(record)}}, "urgent": URGENT},
        env={**FAST, "SCALER_MAX_TOTAL_WORKERS": "4"},
    )
    try:
        stack.start()
        slow_rows = b"n,sleep_ms\n" + b"".join(b"%d,300\n" % i for i in range(150))
        bulk_upload = stack.upload(slow_rows, "bulk").json()["upload_id"]
        stack.wait_workers("bulk", lambda s: s["running"] == 4, timeout=30, what="bulk holding the whole budget")
        sampler = Sampler(lambda: worker_processes(stack))
        asked = time.monotonic()
        stack.upload(rows(30), "urgent").raise_for_status()
        stack.wait_workers("urgent", lambda s: s["workers"] == 2, timeout=30, what="urgent's 2 workers")
        took = time.monotonic() - asked
        events = [(e["job_type"], e["reason"]) for e in stack.status()["events"]]
        assert any(
            t == "bulk" and r.startswith("preempted -2: the budget goes to urgent (priority 10)") for t, r in events
        )
        waiting = [r for t, r in events if t == "urgent" and r.startswith("waiting for budget")]
        assert not waiting or waiting[0].startswith("waiting for budget: 4/4 held by bulk (priority 0)"), waiting

        queue = stack.queue_of("bulk")
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=120, what="bulk's rows to drain")
        wait_until(lambda: not stack.live_worker_pids(), timeout=60, what="every worker gone after idle_seconds")
        assert sampler.stop() <= 4, "never more than the budget of worker processes alive"
        assert sampler.samples > 20
        started = Path(f"{record}.started").read_text().split()
        assert sorted(started) == sorted(f"{bulk_upload}:{n}" for n in range(1, 151)), "each bulk row started once"
        done = [json.loads(line) for line in record.read_text().splitlines()]
        assert len(done) == 150 and not any(item["redelivered"] for item in done), "no bulk row was redelivered"
        ended = [w for w in stack.status()["workers"] if w["finished_at"] is not None]
        assert ended and {w["exit_code"] for w in ended} == {0}, "every worker stopped gracefully"
        print(f"urgent had its 2 workers {took:.1f} s after its upload")
    finally:
        stack.stop()


def test_pause_keeps_rows_survives_a_restart_and_resume_brings_workers_back(broker: Broker, tmp_path: Path) -> None:
    sleep = {"handler": "sleep", "threshold": 5, "max_workers": 3, "idle_seconds": 3, "env": {"SLEEP_MS": "200"}}
    stack = Stack(broker, tmp_path, {"sleep": sleep}, env=FAST)
    try:
        stack.start()
        upload = stack.upload(rows(200), "sleep").json()["upload_id"]
        stack.wait_workers("sleep", lambda s: s["running"] >= 2, timeout=30, what="workers")
        assert control(stack, "pause", "sleep").json() == {"job_type": "sleep", "control": "paused"}
        paused = stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=30, what="every worker stopped")
        assert (paused["state"], paused["code"], paused["control"]) == ("paused", "paused", "paused")
        wait_until(lambda: not stack.live_worker_pids(), timeout=15, what="worker processes to exit")
        queue = stack.queue_of("sleep")
        kept = broker.queue_depth(queue)
        assert kept > 0 and kept + len(stack.processed()) == 200, "rows stay queued, none lost"
        assert stack.upload(rows(10), "sleep").status_code == 200, "uploads are still accepted while paused"

        stack.scaler.stop()
        stack.start_scaler()
        again = stack.wait_workers("sleep", lambda s: s["control"] == "paused", timeout=15, what="pause after restart")
        ticks = stack.status()["tick"]["number"]
        wait_until(lambda: stack.status()["tick"]["number"] >= ticks + 5, timeout=15, what="five ticks")
        assert again["state"] == "paused" and not stack.live_worker_pids(), "still paused after the restart"

        assert control(stack, "resume", "sleep").status_code == 200
        stack.wait_workers("sleep", lambda s: s["workers"] > 0, timeout=15, what="workers back after resume")
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=120, what="the rows to drain")
        processed = wait_until(lambda: len(p := stack.processed()) >= 210 and p, timeout=30, what="every row")
        assert {f"{upload}:{n}" for n in range(1, 201)} <= set(processed) and max(processed.values()) == 1
    finally:
        stack.stop()


def test_drain_works_off_the_backlog_then_holds_at_zero(broker: Broker, tmp_path: Path) -> None:
    sleep = {"handler": "sleep", "threshold": 5, "max_workers": 2, "min_workers": 1, "env": {"SLEEP_MS": "20"}}
    stack = Stack(broker, tmp_path, {"sleep": sleep}, env=FAST)
    try:
        stack.start()
        stack.wait_workers("sleep", lambda s: s["running"] == 1, timeout=30, what="the warm worker")
        stack.upload(rows(40), "sleep").raise_for_status()
        assert control(stack, "drain", "sleep").status_code == 200
        held = stack.wait_workers("sleep", lambda s: s["code"] == "drained" and s["workers"] == 0, timeout=60)
        assert held["state"] == "paused" and broker.queue_depth(stack.queue_of("sleep")) == 0
        assert len(stack.processed()) == 40, "the backlog was worked off before holding at zero"
    finally:
        stack.stop()


def test_control_endpoints_need_the_token_and_a_known_type(broker: Broker, tmp_path: Path) -> None:
    stack = Stack(
        broker,
        tmp_path,
        {"sleep": {"handler": "sleep"}},
        env={"PRODUCER_TOKEN": "s3cret"},
    )
    try:
        stack.start_scaler()
        refused = control(stack, "pause", "sleep", token="")
        assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
        assert control(stack, "pause", "sleep", token="wrong").status_code == 401
        unknown = control(stack, "pause", "nope", token="s3cret")
        assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]
        assert control(stack, "drain", "sleep", token="s3cret").json()["control"] == "drain"
        stack.wait_workers("sleep", lambda s: s["control"] == "drain", timeout=10, what="drain in the status")
        assert control(stack, "retry", "sleep", token="s3cret").json() == {"job_type": "sleep", "retry": True}
        writes_only = stack.get(
            f"{stack.scaler_url}/api/job-types/sleep/pause", headers={"Authorization": "Bearer s3cret"}
        )
        assert writes_only.status_code == 405

        # What ./manage.sh pause|resume TYPE runs, with the token from the environment.
        def command(*args: str, token: str) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-m", "scaler", "control", *args, "--url", stack.scaler_url]
            env = {**os.environ, "PRODUCER_TOKEN": token}
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, cwd=REPO)

        paused = command("pause", "sleep", token="s3cret")
        assert paused.returncode == 0 and paused.stdout.strip() == "sleep: pause in force"
        refused = command("resume", "sleep", token="wrong")
        assert refused.returncode == 1 and "401: wrong token" in refused.stderr
        assert command("resume", "nope", token="s3cret").stderr.startswith("scaler: 404: unknown job type 'nope'")
    finally:
        stack.stop()
