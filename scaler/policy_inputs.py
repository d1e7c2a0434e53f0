"""What the policy is fed: one type's observed facts and each worker's effective state.

The loop observes raw things (the backend's `WorkerInfo`, the worker's own
`Heartbeat`, the queue counts); the policy (`scaler.policy`) wants them folded
into a few plain inputs. The folding lives here, beside the policy and as pure
as it, so the rules for "is this worker running yet" and "is it busy" are in
one place for the loop, the status document and the tests, instead of inside
the document that only shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.config import JobType
from common.control_messages import Heartbeat, HeartbeatState
from scaler.backends.base import WorkerInfo, WorkerState
from scaler.policy import Control, QueueStats

#: Heartbeat states that say a worker consumes (it has declared its queue and takes messages).
RUNNING_HEARTBEATS = frozenset({HeartbeatState.IDLE, HeartbeatState.BUSY})
#: Heartbeat states that say a worker is on its way out.
LEAVING_HEARTBEATS = frozenset({HeartbeatState.STOPPING, HeartbeatState.STOPPED})


def effective_state(info: WorkerInfo, heartbeat: Heartbeat | None, stop_requested: bool) -> WorkerState:
    """The backend says whether a worker exists; its heartbeat says whether it consumes yet."""
    if info.state.finished:
        return info.state
    if stop_requested or info.state is WorkerState.STOPPING:
        return WorkerState.STOPPING
    if heartbeat is not None:
        if heartbeat.state in RUNNING_HEARTBEATS:
            return WorkerState.RUNNING
        if heartbeat.state in LEAVING_HEARTBEATS:
            return WorkerState.STOPPING
    return info.state


def busy(heartbeat: Heartbeat | None) -> bool:
    """A worker with a row in hand is never chosen for a scale-down."""
    return heartbeat is not None and (heartbeat.state == HeartbeatState.BUSY or heartbeat.current_message is not None)


@dataclass(frozen=True)
class TypeFacts:
    """What the loop observed of one type on this tick."""

    job_type: JobType
    stats: QueueStats | None
    live: list[tuple[WorkerInfo, WorkerState]]
    removed: bool
    control: Control

    @property
    def in_tail(self) -> bool:
        """Whether the type has its last rows in hand: none ready, some unacknowledged."""
        return self.stats is not None and self.stats.ready == 0 and self.stats.unacked > 0
