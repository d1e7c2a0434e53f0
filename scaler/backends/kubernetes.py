"""Workers as Kubernetes batch/v1 Jobs, through the official client.

Per tick: one list of the scaler's Jobs and one list of their Pods, by label,
for every job type at once. A Pending pod counts as starting; a pod the
scheduler cannot place (or whose image cannot be pulled, or whose Secret is
missing) is reported with Kubernetes' own message once that has lasted
`unschedulable_grace` seconds, and the policy then stops bursting that type. A
deleted Job whose pod is still terminating is a stopping worker. Every API
call is retried with backoff on 409/429/5xx, transport errors and timeouts; a
create that comes back 409 AlreadyExists after a retry means an earlier
attempt succeeded, so a burst is never doubled. What still fails is raised as
one readable KubernetesApiError; the control loop logs it and carries on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from jobtypes.config import DEFAULT_STOP_GRACE_SECONDS, JobType
from scaler.backends.base import WorkerInfo, WorkerState
from scaler.backends.kubernetes_manifests import (
    MANAGED_SELECTOR,
    TYPE_ANNOTATION,
    ClusterSettings,
    new_worker_id,
    render_job_manifest,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIED_STATUSES = {409, 429, 500, 502, 503, 504}
KEEP_FINISHED_SECONDS = 60.0
#: Waiting reasons of a Pending pod's container that will not pass by themselves.
CANNOT_START_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def _retriable(error: BaseException) -> bool:
    if isinstance(error, ApiException):
        return error.status in RETRIED_STATUSES
    return isinstance(error, (urllib3.exceptions.HTTPError, OSError))


def describe(error: BaseException | None) -> str:
    """An API error in one line ("429 Too Many Requests: ..."), not the client's multi-line dump with headers."""
    if isinstance(error, ApiException):
        message = ""
        try:
            message = json.loads(error.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(error.body or "")[:200]
        return f"{error.status} {error.reason}" + (f": {message}" if message else "")
    return f"{type(error).__name__}: {error}"


class KubernetesApiError(RuntimeError):
    """An API call that still failed after its retries, in one readable line (for the log and the dashboard)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def with_retries(call: Callable[[], T], what: str, attempts: int = 4) -> T:
    """Run `call`, retrying API errors that may pass (conflict, throttling, server errors, timeouts).

    What still fails is raised as a KubernetesApiError naming the call, e.g.
    "creating Job x: 403 Forbidden: jobs.batch is forbidden: ..."."""
    try:
        for attempt in Retrying(
            retry=retry_if_exception(_retriable),
            wait=wait_exponential(multiplier=0.2, max=2),
            stop=stop_after_attempt(attempts),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "%s failed (%s), retrying", what, describe(state.outcome.exception())
            ),
        ):
            with attempt:
                return call()
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
        raise KubernetesApiError(f"{what}: {describe(error)}", getattr(error, "status", None)) from error
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or reraises


def load_client_configuration() -> None:
    """In a Pod, its service account; elsewhere the kubeconfig: $KUBECONFIG (read now, so a value set after
    import counts) or ~/.kube/config, with its current context or $SCALER_KUBE_CONTEXT."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, context=os.environ.get("SCALER_KUBE_CONTEXT") or None
        )


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        settings: ClusterSettings,
        unschedulable_grace: float = 30.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.unschedulable_grace = unschedulable_grace
        self.request_timeout = request_timeout
        self.calls = 0
        #: Jobs this scaler deleted and when: reported as STOPPING, and not deleted again every tick.
        self._deleted: dict[str, float] = {}

    @classmethod
    def from_environment(cls) -> KubernetesBackend:
        load_client_configuration()
        return cls(
            client.ApiClient(),
            ClusterSettings.from_environment(),
            unschedulable_grace=float(os.environ.get("SCALER_UNSCHEDULABLE_GRACE_SECONDS", "30")),
        )

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    # listing -----------------------------------------------------------------
    def list_workers(self) -> list[WorkerInfo]:
        self.calls += 1
        jobs = with_retries(
            lambda: self.batch.list_namespaced_job(
                self.namespace, label_selector=MANAGED_SELECTOR, _request_timeout=self.request_timeout
            ),
            "listing worker Jobs",
        ).items
        pods = with_retries(
            lambda: self.core.list_namespaced_pod(
                self.namespace, label_selector=MANAGED_SELECTOR, _request_timeout=self.request_timeout
            ),
            "listing worker Pods",
        ).items
        pods_by_worker: dict[str, list[Any]] = {}
        for pod in pods:
            instance = (pod.metadata.labels or {}).get("app.kubernetes.io/instance")
            if instance:
                pods_by_worker.setdefault(instance, []).append(pod)
        now = time.time()
        workers = []
        for job in jobs:
            info = self._worker(job, pods_by_worker.pop(job.metadata.name, []), now)
            if info.state.finished and now - (info.finished_at or now) > KEEP_FINISHED_SECONDS:
                continue  # a record until its TTL, but no longer news
            workers.append(info)
        # A deleted Job's pod lives on through its termination grace period: still a worker, stopping.
        for worker_id, orphans in pods_by_worker.items():
            pod = _newest(orphans)
            if pod is not None and _pod_phase(pod) not in ("Succeeded", "Failed"):
                job_type = (pod.metadata.annotations or {}).get(TYPE_ANNOTATION, "")
                workers.append(
                    WorkerInfo(
                        worker_id,
                        job_type,
                        WorkerState.STOPPING,
                        _time(pod.metadata.creation_timestamp) or now,
                        details=_pod_details(pod, {"job": worker_id, "job_deleted": "true"}),
                    )
                )
        live = {info.worker_id for info in workers if not info.state.finished}
        self._deleted = {name: at for name, at in self._deleted.items() if name in live}
        return workers

    def _worker(self, job: Any, pods: list[Any], now: float) -> WorkerInfo:
        name = job.metadata.name
        job_type = (job.metadata.annotations or {}).get(TYPE_ANNOTATION, "")
        started = _time(job.metadata.creation_timestamp) or now
        status = job.status
        conditions = {
            c.type: c for c in (status.conditions if status is not None else None) or [] if c.status == "True"
        }
        finished_at = exit_code = reason = None
        state = WorkerState.STARTING
        pod = _newest(pods)
        terminated = _terminated(pod)
        if status is not None and ((status.succeeded or 0) > 0 or "Complete" in conditions):
            state = WorkerState.SUCCEEDED
            finished_at = _time(status.completion_time) or _time(
                getattr(conditions.get("Complete"), "last_transition_time", None)
            )
        elif "Failed" in conditions:
            state, finished_at = WorkerState.FAILED, _time(conditions["Failed"].last_transition_time)
            reason = conditions["Failed"].message if conditions["Failed"].reason == "DeadlineExceeded" else None
        elif job.metadata.deletion_timestamp is not None or name in self._deleted:
            state = WorkerState.STOPPING
        elif pod is not None:
            phase = _pod_phase(pod)
            if phase == "Running":
                state = WorkerState.RUNNING
            elif phase in ("Succeeded", "Failed"):  # the Job controller has not caught up yet
                state = WorkerState.SUCCEEDED if phase == "Succeeded" else WorkerState.FAILED
                finished_at = _time(terminated.finished_at) if terminated is not None else None
            else:
                reason = self._cannot_start(pod, now)
        if state.finished:
            finished_at = finished_at or (_time(terminated.finished_at) if terminated is not None else None) or started
            exit_code = (
                terminated.exit_code if terminated is not None else (0 if state is WorkerState.SUCCEEDED else None)
            )
        details = _pod_details(pod, {"job": name}) if pod is not None else {"job": name}
        return WorkerInfo(
            name,
            job_type,
            state,
            started,
            finished_at=finished_at,
            exit_code=exit_code,
            unschedulable_reason=reason,
            details=details,
        )

    def _cannot_start(self, pod: Any, now: float) -> str | None:
        """Why a Pending pod cannot start, once that has lasted the grace period: the scheduler's message for
        an unschedulable pod, or the kubelet's for an image that cannot be pulled or a missing Secret."""
        for condition in (pod.status.conditions if pod.status else None) or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                since = _time(condition.last_transition_time) or now
                if now - since >= self.unschedulable_grace:
                    return condition.message or "the scheduler cannot place this pod"
                return None
        waiting = [
            status.state.waiting
            for status in (pod.status.container_statuses if pod.status else None) or []
            if status.state is not None and status.state.waiting is not None
        ]
        for state in waiting:
            if state.reason in CANNOT_START_REASONS:
                since = _time(pod.status.start_time) or _time(pod.metadata.creation_timestamp) or now
                if now - since >= self.unschedulable_grace:
                    return f"{state.reason}: {state.message}" if state.message else state.reason
        return None

    # starting and ending --------------------------------------------------------
    def start_worker(self, job_type: JobType) -> WorkerInfo:
        """Create one Job. Its name is chosen before the first attempt, so when an attempt whose answer was
        lost (timeout, 5xx) is retried and meets 409 AlreadyExists, that is this worker's own Job: counted
        once. A 409 AlreadyExists on the very first attempt is a name collision: a new name is drawn."""
        for _ in range(3):
            worker_id = new_worker_id(job_type)
            manifest = render_job_manifest(job_type, worker_id, self.settings)
            attempts = 0

            def create(manifest: dict = manifest, worker_id: str = worker_id) -> bool:
                nonlocal attempts
                attempts += 1
                try:
                    self.batch.create_namespaced_job(self.namespace, manifest, _request_timeout=self.request_timeout)
                except ApiException as error:
                    if error.status == 409 and "AlreadyExists" in (error.body or ""):
                        if attempts == 1:
                            return False
                        log.info("Job %s already exists: an earlier attempt created it", worker_id)
                        return True
                    raise
                return True

            if with_retries(create, f"creating Job {worker_id}"):
                log.info("created Job %s for %s", worker_id, job_type.name)
                return WorkerInfo(
                    worker_id, job_type.name, WorkerState.STARTING, time.time(), details={"job": worker_id}
                )
            log.warning("Job name %s is taken; drawing another", worker_id)
        raise KubernetesApiError(f"creating a Job for {job_type.name}: three generated names were all taken", 409)

    def terminate(self, worker: WorkerInfo, job_type: JobType | None) -> None:
        """Delete the worker's Job (and so its pod): Kubernetes sends SIGTERM and kills after the grace period.

        Idempotent: a Job already gone is fine, and a Job deleted moments ago is not deleted again on every tick
        (only once its grace period has passed, in case the first deletion was lost)."""
        if worker.state.finished:
            return
        grace = int(job_type.stop_grace_seconds if job_type else DEFAULT_STOP_GRACE_SECONDS)
        deleted_at = self._deleted.get(worker.worker_id)
        if deleted_at is not None and time.time() - deleted_at < grace + 10:
            return

        def delete() -> None:
            try:
                self.batch.delete_namespaced_job(
                    worker.worker_id,
                    self.namespace,
                    body=client.V1DeleteOptions(propagation_policy="Background", grace_period_seconds=grace),
                    _request_timeout=self.request_timeout,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

        with_retries(delete, f"deleting Job {worker.worker_id}")
        self._deleted[worker.worker_id] = time.time()
        log.info("deleted Job %s (grace %d s)", worker.worker_id, grace)

    def read_log(self, worker_id: str, lines: int = 200) -> str:
        """The last `lines` lines of the worker's newest pod (KeyError when it has none)."""
        pods = with_retries(
            lambda: self.core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{MANAGED_SELECTOR},app.kubernetes.io/instance={worker_id}",
                _request_timeout=self.request_timeout,
            ),
            f"finding the pod of {worker_id}",
        ).items
        pod = _newest(pods)
        if pod is None:
            raise KeyError(worker_id)
        try:
            text = with_retries(
                lambda: self.core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, tail_lines=lines, _request_timeout=self.request_timeout
                ),
                f"reading the log of {worker_id}",
            )
        except KubernetesApiError as error:
            if error.status == 400:  # the container has not started yet: no log to show
                return ""
            raise
        return text if not text or text.endswith("\n") else text + "\n"

    def check(self, job_type: JobType) -> str | None:
        """Nothing to check before creating a Job: the cluster reports what fails (see `_cannot_start`)."""
        return None

    def close(self) -> None:
        self.batch.api_client.close()


def _time(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def _newest(pods: list[Any]) -> Any | None:
    return max(pods, key=lambda pod: _time(pod.metadata.creation_timestamp) or 0.0, default=None)


def _pod_phase(pod: Any) -> str:
    return (pod.status.phase if pod.status is not None else None) or "Pending"


def _terminated(pod: Any | None) -> Any | None:
    """The worker container's terminated state (exit code, finish time), if it has ended."""
    if pod is None or pod.status is None:
        return None
    for status in pod.status.container_statuses or []:
        if status.state is not None and status.state.terminated is not None:
            return status.state.terminated
    return None


def _pod_details(pod: Any, details: dict[str, str]) -> dict[str, str]:
    details = {**details, "pod": pod.metadata.name, "phase": _pod_phase(pod)}
    if pod.spec is not None and pod.spec.node_name:
        details["node"] = pod.spec.node_name
    return details
