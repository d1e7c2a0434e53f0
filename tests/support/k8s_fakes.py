"""Stand-ins for the broker side of the scaler (queue counts, heartbeats, stop requests) and a clock,
so the control loop can run against the emulated Kubernetes API without RabbitMQ."""

from __future__ import annotations

from common.control_messages import Heartbeat
from scaler.queue_stats import RawCounts


class FakeStats:
    def __init__(self) -> None:
        self.queues: dict[str, RawCounts] = {}
        self.error: str | None = None
        #: which management-API node answered and which failed (scaler.queue_stats.QueueStatsSource shows both)
        self.node: str | None = "fake"
        self.failed: dict[str, str] = {}

    def set(self, queue: str, ready: int, unacked: int = 0) -> None:
        self.queues[queue] = RawCounts(ready, unacked)

    def fetch(self) -> dict[str, RawCounts]:
        return dict(self.queues)


class FakeChannel:
    def __init__(self) -> None:
        self.heartbeats: dict[str, Heartbeat] = {}
        self.stop_requests: list[str] = []

    def beat(self, worker_id: str, state: str, current: str | None = None) -> None:
        self.heartbeats[worker_id] = Heartbeat(worker_id, "render", state, current_message=current)

    def snapshot(self) -> dict[str, Heartbeat]:
        return dict(self.heartbeats)

    def request_stop(self, worker_id: str) -> None:
        self.stop_requests.append(worker_id)

    def declare(self, job_types: list) -> None:
        """The real channel declares these types' queues on the broker; these tests have none."""


class FakeClock:
    """A clock a test moves by hand (`clock.now += 11`)."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now
