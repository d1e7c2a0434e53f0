"""What the scaler shows: the status document, recent events and the charts' history.

The control loop writes here once per tick; the web server's threads read.
Documents are built whole and swapped under a lock, so a reader never sees
half a tick. The history behind the charts (six hours, bounded) is
`scaler.history`; every event goes there too, as a marker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from common.control_messages import Heartbeat
from scaler.history import History, HistorySettings, Sample

MAX_EVENTS = 200


class StatusBoard:
    def __init__(self, history: HistorySettings | None = None) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] = {"job_types": {}, "workers": [], "events": [], "tick": {"number": 0}}
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.history = History(history)
        self.tick_number = 0

    def event(self, job_type: str, direction: str, reason: str) -> None:
        now = time.time()
        with self._lock:
            self._events.append({"ts": now, "job_type": job_type, "direction": direction, "reason": reason})
        self.history.event(now, job_type, direction, reason)

    def publish(
        self, document: dict[str, Any], samples: Mapping[str, Sample], heartbeats: Mapping[str, Heartbeat], now: float
    ) -> None:
        """Swap in this tick's document and add its samples to the history."""
        self.history.record(now, samples, heartbeats)
        with self._lock:
            self.tick_number += 1
            document["events"] = list(self._events)[::-1][:50]
            document["tick"]["number"] = self.tick_number
            self._document = document

    def document(self) -> dict[str, Any]:
        with self._lock:
            return self._document
