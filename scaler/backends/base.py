"""What the control loop needs from a place that runs workers.

A backend answers "which workers exist?" with one call per tick for every job
type, and starts and ends workers. Everything else (which type needs how many
workers, when a worker may stop) is the policy's job, not the backend's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from common.config import JobType
from common.errors import NotFound


class WorkerLogNotFound(NotFound):
    """The backend has no log of that worker (never started here, or its log is gone)."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"no log for worker {worker_id[:80]!r}")


class WorkerState(str, Enum):
    STARTING = "starting"  # created, not yet consuming (process booting, Pod Pending)
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop, still alive
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero, was killed, or the Pod failed

    @property
    def finished(self) -> bool:
        return self in (WorkerState.SUCCEEDED, WorkerState.FAILED)


#: The states of a worker that is alive: what the status document and the metrics count.
LIVE_STATES = (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING)


@dataclass
class WorkerInfo:
    """One worker as the backend sees it."""

    worker_id: str
    job_type: str
    state: WorkerState
    started_at: float
    finished_at: float | None = None
    exit_code: int | None = None
    #: Why a worker cannot start, e.g. the scheduler's "0/3 nodes are available: ...".
    unschedulable_reason: str | None = None
    #: Why a worker failed or cannot run, in the worker's or the platform's own words: the last lines
    #: of a local worker's log after a non-zero exit; on Kubernetes the pod's waiting or termination
    #: reason and message (CrashLoopBackOff, ErrImagePull, ...). The policy turns a type whose workers
    #: fail before they ever consumed into `failing` with this text as the reason.
    failure_reason: str | None = None
    #: Backend-specific facts worth showing (pid, node, pod name).
    details: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def list_workers(self) -> list[WorkerInfo]:
        """Every worker this scaler started that is not yet forgotten, all types, in one call."""

    def check(self, job_type: JobType) -> str | None:
        """Why `job_type` cannot start a worker at all, found without starting one (e.g. the local
        backend finds no handler module); None when nothing is known to be wrong."""

    def start_worker(self, job_type: JobType) -> WorkerInfo:
        """Start one worker for `job_type` and return it in state STARTING."""

    def terminate(self, worker: WorkerInfo, job_type: JobType | None) -> None:
        """Fallback end of a worker that ignored its stop request: SIGTERM / delete its Job,
        then kill after the type's `stop_grace_seconds`. Must be idempotent."""

    def read_log(self, worker_id: str, lines: int = 200) -> str:
        """The last `lines` lines of the worker's log (for the dashboard); `WorkerLogNotFound` when there is none."""

    def close(self) -> None:
        """Release connections; workers keep running (a restarted scaler adopts them)."""
