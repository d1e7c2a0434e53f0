"""Everything a worker process reads from its environment, in one object.

`WorkerSettings.from_environment()` is called once at start; the rest of the
runtime takes the object, so every tunable has one name, one default and one
place to read about it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from common.env import SettingsError, env_flag, env_float, env_int

#: Seconds between status heartbeats to the scaler.
DEFAULT_HEARTBEAT_SECONDS = 2.0
#: Seconds between INFO progress lines (per-row lines are DEBUG).
DEFAULT_SUMMARY_SECONDS = 10.0
#: Longest a finished row waits for the rows still running beside it, to be reported and acked with them.
DEFAULT_SETTLE_DELAY_SECONDS = 0.05
#: A cancelled upload not repeated in a cancel notice for this long is forgotten.
DEFAULT_CANCEL_MEMORY_SECONDS = 600.0
#: Longest a thread holds the GIL while another wants it (Python's default is 5 ms): short, so the connection's
#: thread reads a report's confirm (and acks its rows) promptly even while handler threads are busy.
DEFAULT_SWITCH_INTERVAL_MS = 0.5
#: Largest outcome report body; a bigger group is split. RabbitMQ keeps messages under 4096 bytes
#: (`queue_index_embed_msgs_below`) in the queue's own store and confirms them sooner than larger ones.
DEFAULT_REPORT_MAX_BYTES = 4000
#: Room for rows already handled whose outcome report awaits the broker's confirm, in multiples of the type's
#: read-ahead (`JobType.read_ahead`): those rows still count against the channel's prefetch until acked, and
#: without this room they would empty the handler's window for a confirm round trip at every group.
DEFAULT_SETTLE_ALLOWANCE = 2


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    summary_seconds: float = DEFAULT_SUMMARY_SECONDS
    log_level: int = logging.INFO
    report_outcomes: bool = True
    cancel_memory_seconds: float = DEFAULT_CANCEL_MEMORY_SECONDS
    settle_delay_seconds: float = DEFAULT_SETTLE_DELAY_SECONDS
    switch_interval_seconds: float = DEFAULT_SWITCH_INTERVAL_MS / 1000
    report_max_bytes: int = DEFAULT_REPORT_MAX_BYTES
    settle_allowance: int = DEFAULT_SETTLE_ALLOWANCE

    @classmethod
    def from_environment(cls, job_type: str, environ: Mapping[str, str] = os.environ) -> WorkerSettings:
        """WORKER_ID, WORKER_HEARTBEAT_SECONDS, WORKER_SUMMARY_SECONDS, WORKER_LOG_LEVEL,
        WORKER_REPORT_OUTCOMES, WORKER_CANCEL_MEMORY_SECONDS, WORKER_SETTLE_DELAY_MS, WORKER_SWITCH_INTERVAL_MS,
        WORKER_REPORT_MAX_BYTES, WORKER_SETTLE_ALLOWANCE."""
        return cls(
            worker_id=environ.get("WORKER_ID") or f"{job_type}-{socket.gethostname()}-{os.getpid()}",
            heartbeat_seconds=_positive(environ, "WORKER_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS),
            summary_seconds=_positive(environ, "WORKER_SUMMARY_SECONDS", DEFAULT_SUMMARY_SECONDS),
            log_level=_level(environ.get("WORKER_LOG_LEVEL", "info")),
            report_outcomes=env_flag("WORKER_REPORT_OUTCOMES", True, environ=environ),
            cancel_memory_seconds=_positive(environ, "WORKER_CANCEL_MEMORY_SECONDS", DEFAULT_CANCEL_MEMORY_SECONDS),
            settle_delay_seconds=_positive(environ, "WORKER_SETTLE_DELAY_MS", DEFAULT_SETTLE_DELAY_SECONDS * 1000)
            / 1000,
            switch_interval_seconds=_positive(environ, "WORKER_SWITCH_INTERVAL_MS", DEFAULT_SWITCH_INTERVAL_MS) / 1000,
            report_max_bytes=env_int("WORKER_REPORT_MAX_BYTES", DEFAULT_REPORT_MAX_BYTES, minimum=1, environ=environ),
            settle_allowance=env_int("WORKER_SETTLE_ALLOWANCE", DEFAULT_SETTLE_ALLOWANCE, minimum=0, environ=environ),
        )


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    return env_float(name, default, above=0, environ=environ)


def _level(raw: str) -> int:
    level = logging.getLevelName(raw.strip().upper())
    if not isinstance(level, int):
        raise SettingsError(f"WORKER_LOG_LEVEL={raw!r}: use debug, info, warning or error")
    return level
