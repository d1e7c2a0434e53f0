"""When the control loop ticks: every `tick_seconds`, and sooner when there is a reason.

Sooner: at once on a wake-up (several during a tick make one tick after it);
when a type's `idle_seconds` run out, so a scale-down is not late by a tick;
and every `TAIL_TICK_SECONDS` for up to `TAIL_WATCH_SECONDS` while a type's
last rows are in hand (nothing ready, some unacked), so the idle clock starts
within a fraction of a tick of the last ack. The schedule decides from what
the loop tells it after each tick (`in_tail`, the next idle deadline) and its
own memory of when the tail began, never from the published status, so what
is shown and when to tick cannot drift apart. The simulator ticks by the same
constants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from common.config import JobType
from scaler.policy import TypeMemory

#: Shortest pause between two ticks, so a storm of wake-ups cannot keep the loop ticking back to back.
WAKE_MIN_GAP_SECONDS = 0.02
#: A tick meant for the end of an idle period runs this much after it, so the period has surely passed.
IDLE_DEADLINE_MARGIN_SECONDS = 0.01
#: While a type's last rows are in hand, tick this often (for at most TAIL_WATCH_SECONDS), to see the last ack soon.
TAIL_TICK_SECONDS = 0.2
TAIL_WATCH_SECONDS = 10.0


def idle_deadline(memory: Mapping[str, TypeMemory], known: Mapping[str, JobType], wall: float, mono: float) -> float:
    """The monotonic time at which the next type's `idle_seconds` run out (inf if none is idle)."""
    deadlines = [
        state.idle_since + known[name].idle_seconds - wall + mono + IDLE_DEADLINE_MARGIN_SECONDS
        for name, state in memory.items()
        if state.idle_since is not None and name in known
    ]
    return min((d for d in deadlines if d > mono), default=float("inf"))


class TickSchedule:
    """The loop's clock: waits between ticks, cut short by `wake()` and ended by `stop()`. Thread-safe."""

    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self._next_tick = time.monotonic()
        self._tail_since: float | None = None
        self._stopping = threading.Event()
        self._woken = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def starting_tick(self) -> None:
        """A tick begins: a wake-up from now on asks for the tick after it."""
        self._woken.clear()

    def next_wake(self, ended: float, in_tail: bool, idle_at: float) -> float:
        """The monotonic time of the next tick, for a tick that ended at `ended`."""
        if self._next_tick <= ended:
            self._next_tick = max(self._next_tick + self.tick_seconds, ended)
        self._tail_since = (self._tail_since or ended) if in_tail else None
        wake_at = min(self._next_tick, idle_at)
        if self._tail_since is not None and ended - self._tail_since < TAIL_WATCH_SECONDS:
            wake_at = min(wake_at, ended + TAIL_TICK_SECONDS)
        return wake_at

    def wait(self, ended: float, wake_at: float) -> None:
        """Sleep until `wake_at` or a wake-up, but at least `WAKE_MIN_GAP_SECONDS` after `ended` (unless stopped)."""
        self._woken.wait(max(wake_at - ended, 0))
        self._stopping.wait(max(ended + WAKE_MIN_GAP_SECONDS - time.monotonic(), 0))

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()
