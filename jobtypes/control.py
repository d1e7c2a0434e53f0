"""Messages between the scaler and its workers, over RabbitMQ.

They travel over the broker rather than over signals or files so that the same
protocol works for a local child process and for a Pod on another node:

* Stop requests: the scaler publishes to the direct exchange `CONTROL_EXCHANGE`
  with routing key `stop_routing_key(worker_id)`; each worker binds an
  exclusive queue with its own key. A stopping worker takes no new message,
  finishes and acks the one in hand, returns the prefetched rest, exits 0.
* Wake-ups: the producer publishes `wake_body(job_type)` to `CONTROL_EXCHANGE`
  with routing key `WAKE_ROUTING_KEY` as soon as an upload's first rows are
  confirmed, so the scaler ticks at once instead of at its next interval.
* Heartbeats: every worker publishes a small transient JSON `Heartbeat` to the
  fanout exchange `HEARTBEAT_EXCHANGE` every few seconds and on every change of
  state, so the scaler and the dashboard know what each worker is doing and how
  many rows it processed, whatever backend runs it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pika.adapters.blocking_connection import BlockingChannel

CONTROL_EXCHANGE = "autoscaler.control"
HEARTBEAT_EXCHANGE = "autoscaler.heartbeats"
STOP_COMMAND = b'{"command": "stop"}'
WAKE_ROUTING_KEY = "wake"


def wake_body(job_type: str) -> bytes:
    return json.dumps({"job_type": job_type}).encode()


def stop_routing_key(worker_id: str) -> str:
    return f"stop.{worker_id}"


def declare_control_exchanges(channel: BlockingChannel) -> None:
    """Declare both exchanges (idempotent, same arguments everywhere)."""
    channel.exchange_declare(exchange=CONTROL_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(exchange=HEARTBEAT_EXCHANGE, exchange_type="fanout", durable=True)


@dataclass
class Heartbeat:
    """What a worker says about itself. `state` is one of starting, idle, busy, stopping, stopped."""

    worker_id: str
    job_type: str
    state: str
    processed: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    current_message: str | None = None
    pid: int = 0
    host: str = ""
    started_at: float = 0.0
    sent_at: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Heartbeat:
        """Parse a heartbeat; raises ValueError on anything that is not one."""
        try:
            data = json.loads(body)
            return cls(**data)
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a heartbeat: {error}") from error
