"""What the scaler shows: the status document, recent events and 15 minutes of history.

The control loop writes here once per tick; the web server's threads read.
Documents are built whole and swapped under a lock, so a reader never sees
half a tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

HISTORY_SECONDS = 15 * 60
MAX_EVENTS = 200


class StatusBoard:
    def __init__(self, tick_seconds: float) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] = {"job_types": {}, "workers": [], "events": [], "tick": {"number": 0}}
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._history: dict[str, deque[tuple[float, int, int, int]]] = {}
        self._history_length = max(int(HISTORY_SECONDS / max(tick_seconds, 0.1)), 10)
        self.tick_number = 0

    def event(self, job_type: str, direction: str, reason: str) -> None:
        with self._lock:
            self._events.append({"ts": time.time(), "job_type": job_type, "direction": direction, "reason": reason})

    def publish(self, document: dict[str, Any], samples: dict[str, tuple[int, int, int]]) -> None:
        """Swap in this tick's document and append one history sample per type."""
        now = time.time()
        with self._lock:
            for name, (ready, unacked, workers) in samples.items():
                series = self._history.setdefault(name, deque(maxlen=self._history_length))
                series.append((round(now, 2), ready, unacked, workers))
            for name in set(self._history) - set(samples):
                del self._history[name]
            self.tick_number += 1
            document["events"] = list(self._events)[::-1][:50]
            document["tick"]["number"] = self.tick_number
            self._document = document

    def document(self) -> dict[str, Any]:
        with self._lock:
            return self._document

    def history(self) -> dict[str, list[tuple[float, int, int, int]]]:
        with self._lock:
            return {name: list(series) for name, series in self._history.items()}
