"""What state a worker is in, read from its Job and its Pod: pure functions, no API calls.

The contract with the policy: a Pending pod is STARTING; a running pod is
RUNNING; a Complete Job is SUCCEEDED; a Failed Job or pod is FAILED; and so is
a pod that cannot start or keeps crashing (CrashLoopBackOff, ErrImagePull,
ImagePullBackOff, InvalidImageName, CreateContainerConfigError,
CreateContainerError) and a worker still not started after the start timeout
(a pod Pending for another reason, or no pod at all, e.g. refused by a
ResourceQuota). A FAILED worker carries `failure_reason` in Kubernetes' own
words: the waiting reason and message, the exit code with the termination
message, the Job's failure condition. A pod the scheduler cannot place is not a
failure: it stays STARTING with the scheduler's message as
`unschedulable_reason` (once that has lasted the grace period), because the
cluster (or its autoscaler) may yet make room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaler.backends.base import WorkerInfo, WorkerState
from scaler.backends.kubernetes_manifests import TYPE_ANNOTATION

#: Waiting reasons of a worker container that will not pass by themselves: the worker failed to start.
FAILED_START_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
INSTANCE_LABEL = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class StartLimits:
    """How long a worker may take to start before the backend says so."""

    #: Seconds a pod may stay unschedulable before the scheduler's message is reported.
    unschedulable_grace: float = 30.0
    #: Seconds a worker may stay Pending (or without a pod) before it counts as failed and is replaced.
    start_timeout: float = 600.0


def time_of(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def newest(pods: list[Any]) -> Any | None:
    return max(pods, key=lambda pod: time_of(pod.metadata.creation_timestamp) or 0.0, default=None)


def pod_phase(pod: Any) -> str:
    return (pod.status.phase if pod.status is not None else None) or "Pending"


def pods_by_worker(pods: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for pod in pods:
        instance = (pod.metadata.labels or {}).get(INSTANCE_LABEL)
        if instance:
            grouped.setdefault(instance, []).append(pod)
    return grouped


def job_type_of(obj: Any) -> str:
    return (obj.metadata.annotations or {}).get(TYPE_ANNOTATION, "")


def pod_details(pod: Any | None, details: dict[str, str]) -> dict[str, str]:
    if pod is None:
        return details
    details = {**details, "pod": pod.metadata.name, "phase": pod_phase(pod)}
    if pod.spec is not None and pod.spec.node_name:
        details["node"] = pod.spec.node_name
    return details


def container_status(pod: Any | None) -> Any | None:
    """The worker container's status (its only container), if the kubelet has reported one."""
    if pod is None or pod.status is None:
        return None
    return next(iter(pod.status.container_statuses or []), None)


def terminated_state(status: Any | None) -> Any | None:
    """The container's end: its current terminated state, else the last one (a crash-looping container)."""
    if status is None:
        return None
    for state in (status.state, status.last_state):
        if state is not None and state.terminated is not None:
            return state.terminated
    return None


def failed_waiting(status: Any | None) -> Any | None:
    """The container's waiting state when it is one that will not pass by itself."""
    waiting = status.state.waiting if status is not None and status.state is not None else None
    return waiting if waiting is not None and waiting.reason in FAILED_START_REASONS else None


def failure_reason(condition: Any | None, pod: Any | None) -> str:
    """In Kubernetes' words, most specific first: the container's waiting reason, its exit code and termination
    message, the pod's own reason (Evicted, ...), the Job's failure condition; e.g. `CrashLoopBackOff: back-off
    10s ...; exit code 2 (Error): no handler module ...`."""
    status = container_status(pod)
    parts = []
    waiting = failed_waiting(status)
    if waiting is not None:
        parts.append(_said(waiting.reason, waiting.message))
    terminated = terminated_state(status)
    if terminated is not None and terminated.exit_code != 0:
        ended = f"exit code {terminated.exit_code}" + (f" ({terminated.reason})" if terminated.reason else "")
        parts.append(_said(ended, (terminated.message or "").strip()))
    if pod is not None and pod.status is not None and pod.status.reason:
        parts.append(_said(pod.status.reason, pod.status.message))
    if condition is not None:
        parts.append(_said(condition.reason, condition.message))
    return "; ".join(parts) or "the worker failed"


def _said(what: str, message: str | None) -> str:
    return f"{what}: {message}" if message else str(what)


def read_worker(job: Any, pods: list[Any], now: float, limits: StartLimits, deleting: bool = False) -> WorkerInfo:
    """One worker from its Job and its pods (see the module's contract)."""
    name = job.metadata.name
    started = time_of(job.metadata.creation_timestamp) or now
    conditions = {
        c.type: c for c in (job.status.conditions if job.status is not None else None) or [] if c.status == "True"
    }
    pod = newest(pods)
    status = container_status(pod)
    terminated = terminated_state(status)
    info = WorkerInfo(name, job_type_of(job), WorkerState.STARTING, started, details=pod_details(pod, {"job": name}))
    if (job.status is not None and (job.status.succeeded or 0) > 0) or "Complete" in conditions:
        complete = conditions.get("Complete")
        return _finished(info, WorkerState.SUCCEEDED, terminated, time_of(job.status.completion_time) or _at(complete))
    if "Failed" in conditions:
        failed = conditions["Failed"]
        return _failed(info, failure_reason(failed, pod), terminated, _at(failed) or now)
    if job.metadata.deletion_timestamp is not None or deleting:
        info.state = WorkerState.STOPPING
        return info
    return _from_pod(info, pod, now, limits)


def _from_pod(info: WorkerInfo, pod: Any | None, now: float, limits: StartLimits) -> WorkerInfo:
    """A worker whose Job has not finished, from its pod."""
    if pod is None:
        return _timed_out(info, now, limits, "no pod was created (a ResourceQuota or an admission webhook?)")
    phase, status = pod_phase(pod), container_status(pod)
    if phase == "Failed" or failed_waiting(status) is not None:  # a Failed pod: the Job controller lags behind
        return _failed(info, failure_reason(None, pod), terminated_state(status), now)
    if phase == "Succeeded":
        return _finished(info, WorkerState.SUCCEEDED, terminated_state(status), None)
    if phase == "Running":
        info.state = WorkerState.RUNNING
        return info
    info.unschedulable_reason = unschedulable(pod, now, limits.unschedulable_grace)
    if unschedulable_condition(pod) is not None:
        return info  # the cluster may yet make room: never timed out
    waiting = status.state.waiting if status is not None and status.state is not None else None
    return _timed_out(
        info, now, limits, f"the pod is still Pending ({getattr(waiting, 'reason', None) or 'no reason'})"
    )


def unschedulable(pod: Any, now: float, grace: float) -> str | None:
    """The scheduler's message for a pod it could not place, once that has lasted `grace` seconds."""
    condition = unschedulable_condition(pod)
    if condition is None or now - (time_of(condition.last_transition_time) or now) < grace:
        return None
    return condition.message or "the scheduler cannot place this pod"


def unschedulable_condition(pod: Any) -> Any | None:
    """The pod's `PodScheduled=False` condition with reason Unschedulable, if it has one."""
    return next(
        (
            c
            for c in (pod.status.conditions if pod.status else None) or []
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        ),
        None,
    )


def _at(condition: Any | None) -> float | None:
    return time_of(condition.last_transition_time) if condition is not None else None


def _finished(info: WorkerInfo, state: WorkerState, terminated: Any | None, at: float | None) -> WorkerInfo:
    info.state = state
    info.finished_at = at or (time_of(terminated.finished_at) if terminated is not None else None) or info.started_at
    info.exit_code = terminated.exit_code if terminated is not None else (0 if state is WorkerState.SUCCEEDED else None)
    return info


def _failed(info: WorkerInfo, reason: str, terminated: Any | None, at: float) -> WorkerInfo:
    info.failure_reason = reason
    return _finished(info, WorkerState.FAILED, terminated, at)


def _timed_out(info: WorkerInfo, now: float, limits: StartLimits, why: str) -> WorkerInfo:
    """STARTING as it is, or FAILED once it has not started for `start_timeout` seconds."""
    if now - info.started_at < limits.start_timeout:
        return info
    return _failed(info, f"not started after {limits.start_timeout:.0f} s: {why}", None, now)
