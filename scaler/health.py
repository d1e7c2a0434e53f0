"""The scaler's own health: is every thread it needs alive and making progress?

`/healthz` answers 503 when one is not, so a supervisor (Kubernetes' liveness
probe, an operator's monitor) restarts a scaler that is wedged rather than one
that merely waits for the broker: the control loop must have ticked recently
(a tick survives a dead broker: it just makes no decision) and the
heartbeat/wake-up consumer thread must be alive and going round its loop
(reconnect waits included). The web server answers the request, so it is
alive when anyone can ask.
"""

from __future__ import annotations

import time
from typing import Any

from scaler.loop import Scaler

#: The control loop may miss this many ticks in a row (a slow API call) before it counts as stuck.
MISSED_TICKS = 5


class HealthCheck:
    def __init__(self, scaler: Scaler) -> None:
        self.scaler = scaler
        #: A thread that made no progress for this long is stuck (`SCALER_HEALTH_STALE_SECONDS`).
        self.stale_seconds = scaler.settings.health_stale_seconds
        self.created_at = time.time()

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON document for /healthz)."""
        loop = self._loop()
        channel = self._channel()
        problems = [
            f"{name}: {part['problem']}"
            for name, part in (("control loop", loop), ("worker channel", channel))
            if part["problem"]
        ]
        document = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "control_loop": loop,
            "worker_channel": channel,
            "web": {"alive": True},
            "leader": self.scaler.is_leader(),
        }
        return not problems, document

    def _loop(self) -> dict[str, Any]:
        last = self.scaler.last_at
        age = time.time() - (last or self.created_at)
        limit = max(self.stale_seconds, MISSED_TICKS * self.scaler.tick_seconds)
        problem = None
        if age > limit:
            problem = f"no tick for {age:.0f} s (limit {limit:.0f} s)" if last else f"not ticked in {age:.0f} s"
        return {"last_tick_age_seconds": round(age, 2) if last else None, "problem": problem}

    def _channel(self) -> dict[str, Any]:
        health = self.scaler.channel.health()
        problem = None
        if not health.alive:
            problem = "the heartbeat and wake-up consumer thread is not running"
        elif health.last_progress_age > self.stale_seconds:
            problem = f"the heartbeat consumer made no progress for {health.last_progress_age:.0f} s"
        return {
            "alive": health.alive,
            "connected": health.connected,
            "node": health.node,
            "reason": health.reason,
            "last_progress_age_seconds": round(health.last_progress_age, 2),
            "malformed_messages": health.malformed,
            "wake_ups": health.wake_ups,
            "problem": problem,
        }
