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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

CONTROL_EXCHANGE = "autoscaler.control"
HEARTBEAT_EXCHANGE = "autoscaler.heartbeats"
STOP_COMMAND = b'{"command": "stop"}'
WAKE_ROUTING_KEY = "wake"


class HeartbeatState(StrEnum):
    """What a worker announces it is doing; the values are the wire strings (a StrEnum compares equal to them)."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: Heartbeat states a worker may announce.
HEARTBEAT_STATES = frozenset(state.value for state in HeartbeatState)
#: Longest worker id, job type or message id a heartbeat may carry (longer is malformed, not truncated).
MAX_ID_LENGTH = 512


def wake_body(job_type: str) -> bytes:
    return json.dumps({"job_type": job_type}).encode()


def wake_job_type(body: bytes) -> str:
    """The job type a wake-up names; raises ValueError on anything that is not a wake-up."""
    data = _json_object(body, "wake-up")
    job_type = data.get("job_type")
    if not isinstance(job_type, str) or not 0 < len(job_type) <= MAX_ID_LENGTH:
        raise ValueError(f"not a wake-up: 'job_type' must be a non-empty string, got {_shown(job_type)}")
    return job_type


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a {what}: not JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"not a {what}: a JSON {type(data).__name__}, not an object")
    return data


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


def stop_routing_key(worker_id: str) -> str:
    return f"stop.{worker_id}"


def declare_control_exchanges(channel: BlockingChannel) -> None:
    """Declare both exchanges (idempotent, same arguments everywhere)."""
    channel.exchange_declare(exchange=CONTROL_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(exchange=HEARTBEAT_EXCHANGE, exchange_type="fanout", durable=True)


@dataclass
class Heartbeat:
    """What a worker says about itself."""

    worker_id: str
    job_type: str
    state: HeartbeatState
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
        """Parse and check a heartbeat; raises ValueError saying what is wrong with anything that is not one.

        Heartbeats come from any process that can reach the exchange, so every field is checked
        against its type: a list as `worker_id` must be dropped here, not crash whoever reads it.
        Fields this version does not know (a newer worker's) are ignored.
        """
        data = _json_object(body, "heartbeat")
        for name in ("worker_id", "job_type", "state"):
            if name not in data:
                raise ValueError(f"not a heartbeat: {name!r} is missing")
        for name, value in data.items():
            check, wanted = _FIELD_CHECKS.get(name, (_anything, ""))
            if not _holds(check, value):
                raise ValueError(f"not a heartbeat: {name!r} {wanted}, got {_shown(value)}")
        known = {item.name for item in fields(cls)}
        return cls(
            **{name: value for name, value in data.items() if name in known} | {"state": HeartbeatState(data["state"])}
        )


def _holds(check: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(check(value))
    except TypeError:  # e.g. an unhashable list as `state`
        return False


def _anything(value: Any) -> bool:
    return True


def _identifier(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _moment(value: Any) -> bool:
    return type(value) in (int, float) and value >= 0


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def _labels(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


#: Heartbeat field -> (check, what the check wants).
_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "worker_id": (_identifier, "must be a non-empty string"),
    "job_type": (_identifier, "must be a non-empty string"),
    "state": (HEARTBEAT_STATES.__contains__, f"must be one of {sorted(HEARTBEAT_STATES)}"),
    "processed": (_count, "must be a whole number >= 0"),
    "failed": (_count, "must be a whole number >= 0"),
    "retried": (_count, "must be a whole number >= 0"),
    "dead": (_count, "must be a whole number >= 0"),
    "pid": (_count, "must be a whole number >= 0"),
    "started_at": (_moment, "must be a number >= 0"),
    "sent_at": (_moment, "must be a number >= 0"),
    "current_message": (lambda value: value is None or _text(value), "must be a string or null"),
    "host": (_text, "must be a string"),
    "extra": (_labels, "must map strings to strings"),
}
