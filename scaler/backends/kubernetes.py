"""Workers as Kubernetes batch/v1 Jobs, through the official client.

Per tick: one list of the scaler's Jobs and one list of their Pods, by label,
for every job type at once. A Pending pod counts as starting; a pod the
scheduler cannot place is reported with the scheduler's own message once that
has lasted `unschedulable_grace` seconds, and the policy then stops bursting
that type. Every API call is retried with backoff on 409/429/5xx and
transport errors; a create that comes back 409 AlreadyExists after a retry
means an earlier attempt succeeded, so a burst is never doubled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from jobtypes.config import JobType
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


def _retriable(error: BaseException) -> bool:
    if isinstance(error, ApiException):
        return error.status in RETRIED_STATUSES
    return isinstance(error, (urllib3.exceptions.HTTPError, OSError))


def with_retries(call: Callable[[], T], what: str, attempts: int = 4) -> T:
    """Run `call`, retrying API errors that may pass (conflict, throttling, server errors, timeouts)."""
    for attempt in Retrying(
        retry=retry_if_exception(_retriable),
        wait=wait_exponential(multiplier=0.2, max=2),
        stop=stop_after_attempt(attempts),
        reraise=True,
        before_sleep=lambda state: log.warning("%s failed (%s), retrying", what, state.outcome.exception()),
    ):
        with attempt:
            return call()
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or reraises


def load_client_configuration() -> None:
    """In a Pod, the service account; elsewhere, the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, api: client.ApiClient, settings: ClusterSettings, unschedulable_grace: float = 30.0) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.unschedulable_grace = unschedulable_grace
        self.calls = 0

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
            lambda: self.batch.list_namespaced_job(self.namespace, label_selector=MANAGED_SELECTOR, _request_timeout=10),
            "listing worker Jobs",
        ).items
        pods = with_retries(
            lambda: self.core.list_namespaced_pod(self.namespace, label_selector=MANAGED_SELECTOR, _request_timeout=10),
            "listing worker Pods",
        ).items
        pods_by_worker: dict[str, list[Any]] = {}
        for pod in pods:
            instance = (pod.metadata.labels or {}).get("app.kubernetes.io/instance")
            pods_by_worker.setdefault(instance, []).append(pod)
        now = time.time()
        workers = []
        for job in jobs:
            info = self._worker(job, pods_by_worker.get(job.metadata.name, []), now)
            if info.state.finished and now - (info.finished_at or now) > KEEP_FINISHED_SECONDS:
                continue  # a record until its TTL, but no longer news
            workers.append(info)
        return workers

    def _worker(self, job: Any, pods: list[Any], now: float) -> WorkerInfo:
        name = job.metadata.name
        job_type = (job.metadata.annotations or {}).get(TYPE_ANNOTATION, "")
        started = job.metadata.creation_timestamp.timestamp() if job.metadata.creation_timestamp else now
        status = job.status
        finished_at = None
        state = WorkerState.STARTING
        reason = None
        pod = max(pods, key=lambda p: p.metadata.creation_timestamp.timestamp() if p.metadata.creation_timestamp else 0, default=None)
        if status is not None and (status.succeeded or 0) > 0:
            state, finished_at = WorkerState.SUCCEEDED, _time(status.completion_time) or now
        elif status is not None and any(c.type == "Failed" and c.status == "True" for c in status.conditions or []):
            state, finished_at = WorkerState.FAILED, now
        elif job.metadata.deletion_timestamp is not None:
            state = WorkerState.STOPPING
        elif pod is not None:
            phase = pod.status.phase if pod.status else "Pending"
            if phase == "Running":
                state = WorkerState.RUNNING
            elif phase in ("Succeeded", "Failed"):
                state, finished_at = (WorkerState.SUCCEEDED if phase == "Succeeded" else WorkerState.FAILED), now
            else:
                reason = self._unschedulable(pod, now)
        details = {"job": name}
        if pod is not None:
            details["pod"] = pod.metadata.name
            if pod.spec is not None and pod.spec.node_name:
                details["node"] = pod.spec.node_name
        return WorkerInfo(name, job_type, state, started, finished_at=finished_at, unschedulable_reason=reason, details=details)

    def _unschedulable(self, pod: Any, now: float) -> str | None:
        """The scheduler's message for a pod it could not place for longer than the grace period."""
        for condition in (pod.status.conditions if pod.status else None) or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                since = _time(condition.last_transition_time) or now
                if now - since >= self.unschedulable_grace:
                    return condition.message or "the scheduler cannot place this pod"
        return None

    # starting and ending --------------------------------------------------------
    def start_worker(self, job_type: JobType) -> WorkerInfo:
        worker_id = new_worker_id(job_type)
        manifest = render_job_manifest(job_type, worker_id, self.settings)

        def create() -> None:
            try:
                self.batch.create_namespaced_job(self.namespace, manifest, _request_timeout=10)
            except ApiException as error:
                if error.status == 409 and "AlreadyExists" in (error.body or "AlreadyExists"):
                    log.info("Job %s already exists: an earlier attempt created it", worker_id)
                    return
                raise

        with_retries(create, f"creating Job {worker_id}")
        log.info("created Job %s for %s", worker_id, job_type.name)
        return WorkerInfo(worker_id, job_type.name, WorkerState.STARTING, time.time(), details={"job": worker_id})

    def terminate(self, worker: WorkerInfo, job_type: JobType | None) -> None:
        """Delete the worker's Job; Kubernetes sends SIGTERM and kills after the grace period."""
        grace = int(job_type.stop_grace_seconds) if job_type else 30

        def delete() -> None:
            try:
                self.batch.delete_namespaced_job(
                    worker.worker_id, self.namespace,
                    body=client.V1DeleteOptions(propagation_policy="Background", grace_period_seconds=grace),
                    _request_timeout=10,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

        with_retries(delete, f"deleting Job {worker.worker_id}")
        log.info("deleted Job %s (grace %d s)", worker.worker_id, grace)

    def read_log(self, worker_id: str, lines: int = 200) -> str:
        pods = with_retries(
            lambda: self.core.list_namespaced_pod(
                self.namespace, label_selector=f"app.kubernetes.io/instance={worker_id}", _request_timeout=10
            ),
            f"finding the pod of {worker_id}",
        ).items
        if not pods:
            raise KeyError(worker_id)
        return with_retries(
            lambda: self.core.read_namespaced_pod_log(pods[-1].metadata.name, self.namespace, tail_lines=lines, _request_timeout=10),
            f"reading the log of {worker_id}",
        )

    def close(self) -> None:
        self.batch.api_client.close()


def _time(value: Any) -> float | None:
    return value.timestamp() if value is not None else None
