"""Workers as Kubernetes batch/v1 Jobs, through the official client.

Per tick: one paginated list of the scaler's Jobs and one of their Pods, by
label, for every job type at once; what each worker's state is comes from
`kubernetes_states`. A finished worker (succeeded, failed, crash-looping, its
image not pullable, not started within the start timeout) is reported from
the moment it is seen, with its reason and the last lines of its log (read
once); its Job is then deleted (propagation Background), so nothing keeps
restarting and finished Jobs never pile up, and the backend remembers it for
`KEEP_FINISHED_SECONDS` for the dashboard. `ttlSecondsAfterFinished` stays on
every Job as a backstop when no scaler leads. A deleted Job whose pod is still
terminating is a stopping worker until the pod is gone. Every create and
delete first asks the leader election whether this replica may still act, on
the view of this tick (`Leadership`); API errors are retried (`kubernetes_api`).
A type whose Job the API server refuses (403 Forbidden, a namespace that does
not exist, an invalid spec) is reported by `check()` with the server's words
and not tried again before a backoff, so it does not fail once per tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common.config import DEFAULT_STOP_GRACE_SECONDS, JobType
from scaler.backends.base import WorkerInfo, WorkerLogNotFound, WorkerState
from scaler.backends.kubernetes_api import (
    KubernetesApiError,
    NotLeading,
    list_all,
    load_client_configuration,
    with_retries,
)
from scaler.backends.kubernetes_manifests import MANAGED_SELECTOR, ClusterSettings, new_worker_id, render_job_manifest
from scaler.backends.kubernetes_settings import DEFAULT_LIST_PAGE_SIZE, KubernetesSettings
from scaler.backends.kubernetes_states import (
    StartLimits,
    container_status,
    job_type_of,
    newest,
    pod_details,
    pod_phase,
    pods_by_worker,
    read_worker,
    terminated_state,
    time_of,
)
from scaler.policy import Backoff

log = logging.getLogger(__name__)
#: Seconds a finished worker stays listed (and its log readable) after its Job is removed.
KEEP_FINISHED_SECONDS = 60.0
#: Log lines kept of a finished worker, and how many of them go into a failed worker's `failure_reason`.
KEPT_LOG_LINES = 200
FAILURE_LOG_LINES = 10
#: A write is not sent with less time than this left in this replica's leadership window.
MIN_WRITE_SECONDS = 0.1


class Leadership(Protocol):
    """What the backend asks the leader election before every create and delete."""

    def now(self) -> float:
        """The election's clock, to stamp when this tick's view of the workers was taken."""

    def acting_window(self, observed_at: float | None) -> float:
        """Seconds during which writes based on a view taken at `observed_at` are safe; <= 0 when this replica
        does not lead, its view predates its leadership, or the tick's deadline has passed."""


@dataclass(frozen=True)
class Refusal:
    """The API server refused a type's Jobs `failures` times in a row; the next try waits until `until`."""

    reason: str
    failures: int
    until: float


@dataclass
class Finished:
    """A finished worker as first seen, and what is kept of it once its Job is gone."""

    info: WorkerInfo
    log: str | None = None
    removed: bool = False


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        settings: ClusterSettings,
        limits: StartLimits | None = None,
        request_timeout: float = 10.0,
        page_size: int = DEFAULT_LIST_PAGE_SIZE,
        leadership: Leadership | None = None,
        clock: Callable[[], float] = time.time,
        finished_per_tick: int = 20,
        backoff: Backoff | None = None,
    ) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.limits = limits or StartLimits()
        self.request_timeout = request_timeout
        self.page_size = page_size
        self.leadership = leadership
        self.clock = clock
        #: Finished workers whose logs are read and Jobs removed per tick at most (the rest wait a tick).
        self.finished_per_tick = finished_per_tick
        #: How long a type whose Jobs the API server refuses waits before the next try.
        self.backoff = backoff or Backoff()
        self.calls = 0
        self._refused: dict[str, Refusal] = {}
        #: Jobs this scaler deleted to stop their worker, and when: reported STOPPING, not deleted every tick.
        self._deleted: dict[str, float] = {}
        self._finished: dict[str, Finished] = {}
        self._observed_at: float | None = None

    @classmethod
    def from_environment(
        cls,
        leadership: Leadership | None = None,
        backoff: Backoff | None = None,
        settings: KubernetesSettings | None = None,
    ) -> KubernetesBackend:
        """The backend `settings` (default: read from the environment) describe, on the cluster's configuration."""
        settings = settings or KubernetesSettings.from_environment()
        load_client_configuration()
        return cls(
            client.ApiClient(),
            settings.cluster,
            settings.limits,
            page_size=settings.page_size,
            leadership=leadership,
            backoff=backoff,
        )

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def check(self, job_type: JobType) -> str | None:
        """Why the API server will not take `job_type`'s Jobs now: its last refusal, until the backoff after it has
        passed (then one more try). Nothing else is known without a Job: an image is pulled on a node, a missing
        Secret shows as the pod's reason."""
        refusal = self._refused.get(job_type.name)
        left = refusal.until - self.clock() if refusal is not None else 0.0
        return f"{refusal.reason} (next try in {left:.0f} s)" if refusal is not None and left > 0 else None

    # listing -----------------------------------------------------------------
    def list_workers(self) -> list[WorkerInfo]:
        self.calls += 1
        self._observed_at = self.leadership.now() if self.leadership else None
        jobs = self._list(self.batch.list_namespaced_job, "worker Jobs")
        grouped = pods_by_worker(self._list(self.core.list_namespaced_pod, "worker Pods"))
        now = self.clock()
        listed: dict[str, WorkerInfo] = {}
        reads = self.finished_per_tick
        for job in jobs:
            name, pods = job.metadata.name, grouped.pop(job.metadata.name, [])
            if name in self._finished:
                listed[name] = self._finished[name].info
                continue
            info = listed[name] = read_worker(job, pods, now, self.limits, deleting=name in self._deleted)
            if info.state.finished:
                fresh = reads > 0 and now - (info.finished_at or now) <= KEEP_FINISHED_SECONDS
                reads -= fresh
                self._finished[name] = self._remember(info, newest(pods) if fresh else None)
        self._remove_finished([name for name in listed if name in self._finished], reads)
        workers = [info for info in listed.values() if not info.state.finished]
        workers += [
            kept.info
            for kept in self._finished.values()
            if now - (kept.info.finished_at or now) <= KEEP_FINISHED_SECONDS
        ]
        workers += self._terminating(grouped, now)
        self._forget(set(listed), now)
        return workers

    def _list(self, call: Callable[..., Any], what: str) -> list[Any]:
        return list_all(
            partial(call, self.namespace, label_selector=MANAGED_SELECTOR, _request_timeout=self.request_timeout),
            what,
            self.page_size,
        )

    def _terminating(self, orphans: dict[str, list[Any]], now: float) -> list[WorkerInfo]:
        """A deleted Job's pod lives on through its termination grace period: still a worker, stopping, still
        holding its resources (and its type's share of a budget) until it is gone."""
        workers = []
        for worker_id, pods in orphans.items():
            pod = newest(pods)
            if worker_id in self._finished or pod is None or pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            workers.append(
                WorkerInfo(
                    worker_id,
                    job_type_of(pod),
                    WorkerState.STOPPING,
                    time_of(pod.metadata.creation_timestamp) or now,
                    details=pod_details(pod, {"job": worker_id, "job_deleted": "true"}),
                )
            )
        return workers

    def _forget(self, listed: set[str], now: float) -> None:
        self._deleted = {name: at for name, at in self._deleted.items() if name in listed}
        self._finished = {
            name: kept
            for name, kept in self._finished.items()
            if name in listed or now - (kept.info.finished_at or now) <= KEEP_FINISHED_SECONDS
        }

    # finished workers ------------------------------------------------------------
    def _remember(self, info: WorkerInfo, pod: Any | None) -> Finished:
        """A finished worker as first seen; with its pod (a fresh end), the tail of its log is read once, for
        the dashboard and for a failed worker's reason."""
        if info.state is WorkerState.FAILED:
            log.warning("worker %s (%s) failed: %s", info.worker_id, info.job_type, info.failure_reason)
        status = container_status(pod)
        if terminated_state(status) is None:
            return Finished(info)  # never ran (image, Secret, timeout) or not fresh: no log to read
        previous = status.state is not None and status.state.terminated is None  # crash-looping: the last run's
        try:
            text = self._read_pod_log(pod.metadata.name, KEPT_LOG_LINES, previous)
        except KubernetesApiError as error:
            log.warning("could not read the log of %s: %s", info.worker_id, error)
            return Finished(info)
        tail = "\n".join(text.splitlines()[-FAILURE_LOG_LINES:])
        if info.state is WorkerState.FAILED and tail:
            info.failure_reason = f"{info.failure_reason}\nlast log lines:\n{tail}"
        return Finished(info, log=text)

    def _remove_finished(self, names: list[str], budget: int) -> None:
        """Delete the Jobs of finished workers (crash-looping ones stop restarting); only the leader does, a few
        per tick; a Job that could not be deleted is tried again next tick, and its TTL ends it anyway."""
        for name in [name for name in names if not self._finished[name].removed][: max(budget, 0)]:
            kept = self._finished[name]
            try:
                self._delete_job(name, grace=None)
            except NotLeading:
                return
            except KubernetesApiError as error:
                log.warning("could not remove the finished Job %s: %s", name, error)
                return
            kept.removed = True
            log.info("removed the finished Job %s (%s)", name, kept.info.state.value)

    # starting and ending --------------------------------------------------------
    def start_worker(self, job_type: JobType) -> WorkerInfo:
        """Create one Job (see `_create`); a refusal by the API server is remembered for `check()`."""
        try:
            worker = self._create(job_type)
        except NotLeading:
            raise
        except KubernetesApiError as error:
            failures = self._refused[job_type.name].failures + 1 if job_type.name in self._refused else 1
            self._refused[job_type.name] = Refusal(str(error), failures, self.clock() + self.backoff.delay(failures))
            raise
        self._refused.pop(job_type.name, None)
        return worker

    def _create(self, job_type: JobType) -> WorkerInfo:
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
                timeout = self._write_timeout(f"creating Job {worker_id}")
                try:
                    self.batch.create_namespaced_job(self.namespace, manifest, _request_timeout=timeout)
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
                    worker_id, job_type.name, WorkerState.STARTING, self.clock(), details={"job": worker_id}
                )
            log.warning("Job name %s is taken; drawing another", worker_id)
        raise KubernetesApiError(f"creating a Job for {job_type.name}: three generated names were all taken", 409)

    def terminate(self, worker: WorkerInfo, job_type: JobType | None) -> None:
        """Delete the worker's Job (and so its pod): Kubernetes sends SIGTERM and kills after the grace period.

        Idempotent: a Job already gone is fine, and a Job deleted moments ago is not deleted again on every tick
        (only once its grace period has passed, in case the first deletion was lost). A replica that may not act
        deletes nothing: the leader does, on its own view."""
        if worker.state.finished or worker.worker_id in self._finished:
            return
        grace = int(job_type.stop_grace_seconds if job_type else DEFAULT_STOP_GRACE_SECONDS)
        deleted_at = self._deleted.get(worker.worker_id)
        if deleted_at is not None and self.clock() - deleted_at < grace + 10:
            return
        try:
            self._delete_job(worker.worker_id, grace)
        except NotLeading as refused:
            log.info("%s", refused)
            return
        self._deleted[worker.worker_id] = self.clock()
        log.info("deleted Job %s (grace %d s)", worker.worker_id, grace)

    def _delete_job(self, name: str, grace: int | None) -> None:
        def delete() -> None:
            timeout = self._write_timeout(f"deleting Job {name}")
            try:
                self.batch.delete_namespaced_job(
                    name,
                    self.namespace,
                    body=client.V1DeleteOptions(propagation_policy="Background", grace_period_seconds=grace),
                    _request_timeout=timeout,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

        with_retries(delete, f"deleting Job {name}")

    def _write_timeout(self, what: str) -> float:
        """The timeout of a create or delete about to be sent, checked immediately before every attempt: never
        longer than this replica may still act on this tick's view, and NotLeading when it may not act."""
        if self.leadership is None:
            return self.request_timeout
        left = self.leadership.acting_window(self._observed_at)
        if left < MIN_WRITE_SECONDS:
            raise NotLeading(
                f"{what}: not sent: this replica does not lead, or this tick's view of the workers is too old "
                "(taken before its leadership began or past the tick's deadline)"
            )
        return min(self.request_timeout, left)

    # logs --------------------------------------------------------------------------
    def read_log(self, worker_id: str, lines: int = 200) -> str:
        """The last `lines` lines of the worker's newest pod, or of a finished worker as kept."""
        kept = self._finished.get(worker_id)
        if kept is not None and kept.log is not None:
            return "".join(kept.log.splitlines(keepends=True)[-lines:])
        pods = with_retries(
            lambda: self.core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{MANAGED_SELECTOR},app.kubernetes.io/instance={worker_id}",
                _request_timeout=self.request_timeout,
            ),
            f"finding the pod of {worker_id}",
        ).items
        pod = newest(pods)
        if pod is None:
            raise WorkerLogNotFound(worker_id)
        return self._read_pod_log(pod.metadata.name, lines)

    def _read_pod_log(self, pod_name: str, lines: int, previous: bool = False) -> str:
        try:
            text = with_retries(
                lambda: self.core.read_namespaced_pod_log(
                    pod_name, self.namespace, tail_lines=lines, previous=previous, _request_timeout=self.request_timeout
                ),
                f"reading the log of {pod_name}",
            )
        except KubernetesApiError as error:
            if error.status == 400:  # the container has not started yet: no log to show
                return ""
            raise
        return text if not text or text.endswith("\n") else text + "\n"

    def close(self) -> None:
        self.batch.api_client.close()
