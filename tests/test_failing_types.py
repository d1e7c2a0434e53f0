"""Job types whose workers cannot start, with real processes: no storm, a visible reason, recovery on a fix.

The seed's own example entry, added before its handler exists, is the case a
new user meets first: the local backend finds the missing module without
starting anything. A handler that is there but raises at import can only be
found by starting a worker: the type then probes one worker at a time with
exponential backoff.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from harness.broker import Broker
from harness.stack import Stack
from harness.waiting import wait_until
from tests.test_fleet_controls import Sampler, worker_processes

SEED = {"queue": "queue_new", "image": "worker-new:latest", "threshold": 10}
#: Rows drain this soon after the config names a working handler (README, "Faults, load and bad input"): a tick
#: sees the change, a worker starts and 100 no-op rows take well under a second; 10 s leaves room on a loaded machine.
DRAIN_BOUND_SECONDS = 10.0


def rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


def failed_starts(stack: Stack, job_type: str) -> float:
    text = stack.get(f"{stack.scaler_url}/metrics", timeout=5).text
    found = re.search(rf'^scaler_failed_starts_total\{{job_type="{job_type}"\}} (\S+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def use_handler(stack: Stack, job_type: str, handler: str) -> None:
    config = stack.config()
    config[job_type]["handler"] = handler
    stack.config_path.write_text(json.dumps(config))


def test_the_seed_entry_without_a_handler_fails_visibly_without_starting_anything(
    broker: Broker, tmp_path: Path
) -> None:
    stack = Stack(broker, tmp_path, {"new-job": SEED}, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    try:
        stack.start()
        stack.upload(rows(100), "new-job").raise_for_status()
        sampler = Sampler(lambda: worker_processes(stack))
        failing = stack.wait_workers("new-job", lambda s: s["state"] == "failing", timeout=15, what="failing")
        assert failing["code"] == "check-failed"
        assert "no handler module workers.new_job.handler" in failing["reason"]
        ticks = stack.status()["tick"]["number"]
        wait_until(lambda: stack.status()["tick"]["number"] >= ticks + 10, timeout=30, what="ten more ticks")
        assert sampler.stop() == 0, "nothing is started for a type that cannot run"
        errors = [e for e in stack.status()["events"] if e["job_type"] == "new-job" and e["direction"] == "error"]
        assert len(errors) == 1, "one event for the change of state, not one per tick"

        queue = stack.queue_of("new-job")
        assert broker.queue_depth(queue) == 100, "the rows stay queued, untouched"
        use_handler(stack, "new-job", "tests.handlers.noop")
        fixed = time.monotonic()
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=60, what="the rows to drain once fixed")
        drained = time.monotonic() - fixed
        print(f"drained {drained:.1f} s after naming a handler")
        assert drained < DRAIN_BOUND_SECONDS, "the bound the README states"
        assert stack.type_status("new-job")["state"] != "failing"
    finally:
        stack.stop()


def test_a_handler_that_raises_at_import_is_probed_with_backoff_then_recovers(broker: Broker, tmp_path: Path) -> None:
    broken = {**SEED, "handler": "tests.handlers.broken"}
    stack = Stack(broker, tmp_path, {"new-job": broken}, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    try:
        stack.start()
        stack.upload(rows(100), "new-job").raise_for_status()
        watched = time.monotonic()
        alive = Sampler(lambda: worker_processes(stack))
        failing = stack.wait_workers("new-job", lambda s: s["state"] == "failing", timeout=30, what="failing")
        assert "this handler is broken on purpose" in failing["reason"], failing["reason"]
        assert failing["failures"] >= 1 and "broken on purpose" in failing["failure_reason"]
        # Watch for 60 s: the first burst, then one probe at a time after 5, 10, 20, 40 s...
        wait_until(lambda: time.monotonic() - watched >= 60, timeout=65, interval=1, what="60 s of failing")
        started = failed_starts(stack, "new-job") + worker_processes(stack)
        print(f"{started:.0f} workers started in 60 s")
        assert 6 <= started <= 12, f"{started} workers started in 60 s"
        assert alive.stop() <= 5, "never more than the first burst alive at once"
        status = stack.type_status("new-job")
        assert status["state"] == "failing" and status["failures"] >= 3, status
        errors = [e for e in stack.status()["events"] if e["job_type"] == "new-job" and e["direction"] == "error"]
        assert len(errors) == 1, "one event for the change of state, not one per probe"
        queue = stack.queue_of("new-job")
        assert broker.queue_depth(queue) == 100, "the rows stay queued, untouched"

        use_handler(stack, "new-job", "tests.handlers.noop")  # a config change of the type retries at once
        fixed = time.monotonic()
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=60, what="the rows to drain once fixed")
        drained = time.monotonic() - fixed
        print(f"drained {drained:.1f} s after naming a working handler")
        assert drained < DRAIN_BOUND_SECONDS, "the bound the README states"
        stack.wait_workers("new-job", lambda s: s["state"] != "failing", timeout=15, what="the failure cleared")
    finally:
        stack.stop()


def test_retry_endpoint_probes_at_once(broker: Broker, tmp_path: Path) -> None:
    stack = Stack(
        broker,
        tmp_path,
        {"new-job": {**SEED, "handler": "tests.handlers.broken"}},
        env={"SCALER_BACKOFF_SECONDS": "300", "SCALER_MAX_BACKOFF_SECONDS": "300"},
    )
    try:
        stack.start()
        stack.upload(rows(20), "new-job").raise_for_status()
        stack.wait_workers("new-job", lambda s: s["code"] == "backoff", timeout=30, what="backing off")
        before = failed_starts(stack, "new-job")
        assert stack.post(f"{stack.scaler_url}/api/job-types/new-job/retry", timeout=5).status_code == 200
        wait_until(lambda: failed_starts(stack, "new-job") > before, timeout=30, what="a probe at once, not in 300 s")
    finally:
        stack.stop()
