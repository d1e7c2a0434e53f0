"""A worker test harness: a producer to enqueue rows, worker processes to consume them, and what they did.

Workers run the `tests.handlers.recorder` handler (see there for the row
fields that steer it) unless a test's job settings name another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.outcomes import OUTCOMES_QUEUE, OutcomeReport, RowOutcome
from harness.broker import Broker
from harness.processes import Service
from harness.stack import Stack
from harness.waiting import wait_until

RECORDER = {"handler": "tests.handlers.recorder", "retry_delay_seconds": 0.1, "max_attempts": 3}


class Harness:
    """A producer to enqueue rows, worker processes to consume them, and the record of what they did."""

    def __init__(self, broker: Broker, directory: Path, settings: dict, env: dict[str, str] | None = None) -> None:
        self.broker = broker
        self.directory = directory
        self.stack = Stack(broker, directory, {"work": {**RECORDER, **settings}})
        self.stack.env.update({"RECORD_FILE": str(directory / "record.jsonl"), "WORKER_HEARTBEAT_SECONDS": "0.5"})
        self.stack.env.update(env or {})
        self.stack.env["UPLOADS_TRACKER"] = "off"  # the tests read the outcome reports themselves
        self.stack.start_producer()
        self.queue = self.stack.queue_of("work")
        self.workers: list[Service] = []

    def enqueue(self, rows: list[dict]) -> str:
        columns = sorted({key for row in rows for key in row} | {"n"})
        lines = [",".join(columns)] + [",".join(str(row.get(key, "")) for key in columns) for row in rows]
        response = self.stack.upload("\n".join(lines).encode(), "work")
        assert response.status_code == 200, response.text
        return response.json()["upload_id"]

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> Service:
        worker = Service(
            "workers", ["work"], {**self.stack.env, "WORKER_ID": name, **(env or {})}, self.directory / f"{name}.log"
        )
        self.workers.append(worker)
        return worker

    def records(self) -> list[dict]:
        path = self.directory / "record.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def started(self) -> list[str]:
        path = self.directory / "record.jsonl.started"
        return path.read_text().split() if path.exists() else []

    def depth(self, suffix: str = "") -> int:
        return self.broker.queue_depth(self.queue + suffix)

    def wait_records(self, count: int, timeout: float = 60) -> list[dict]:
        return wait_until(
            lambda: len(self.records()) >= count and self.records(), timeout=timeout, what=f"{count} processed rows"
        )

    def consumers(self) -> int:
        """Consumers of the work queue right now, from AMQP (exact: a dead worker's are gone, its rows requeued)."""
        with self.broker.channel() as channel:
            return channel.queue_declare(queue=self.queue, passive=True).method.consumer_count

    def unacked(self) -> int:
        return self.broker.queue(self.queue).get("messages_unacknowledged", 0)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=5)
        self.stack.stop()

    def outcomes(self) -> list[OutcomeReport]:
        """Take every outcome report published so far (they are consumed: call once per test, or accumulate)."""
        return [OutcomeReport.from_json(body) for _, body in self.broker.drain(OUTCOMES_QUEUE)]


def reported_rows(reports: list[OutcomeReport]) -> list[RowOutcome]:
    return [row for report in reports for row in report.rows]


@pytest.fixture()
def harness(broker: Broker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A Harness whose job type has the settings of the test's `job_settings` marker."""
    marker = request.node.get_closest_marker("job_settings")
    created = Harness(broker, tmp_path, marker.args[0] if marker else {})
    yield created
    created.close()
