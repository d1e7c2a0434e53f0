"""Workers that cannot start or keep failing, finished Jobs and long lists: the Kubernetes backend against the
emulated API server, through the official client, on a clock the test moves."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from common.config import JobType
from harness.k8s_emulator import KubernetesEmulator
from scaler.backends.base import WorkerLogNotFound, WorkerState
from scaler.backends.kubernetes import KEEP_FINISHED_SECONDS, KubernetesBackend
from scaler.backends.kubernetes_api import KubernetesApiError, NotLeading
from scaler.backends.kubernetes_manifests import ClusterSettings
from scaler.backends.kubernetes_states import StartLimits
from tests.support.k8s_fakes import FakeClock

NEW_JOB = JobType(name="new-job", queue="queue_new", image="worker-new:latest", threshold=10)
HANDLER_TRACE = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'workers.new_job'\n"


class Standby:
    """A leader election that never lets this replica act."""

    def now(self) -> float:
        return 0.0

    def acting_window(self, observed_at: float | None) -> float:
        return 0.0


@pytest.fixture()
def clock() -> FakeClock:
    clock = FakeClock()
    clock.now = 1_800_000_000.0
    return clock


@pytest.fixture()
def emulator(clock: FakeClock) -> Iterator[KubernetesEmulator]:
    created = KubernetesEmulator(clock=clock)
    yield created
    created.close()


@pytest.fixture()
def backend(emulator: KubernetesEmulator, clock: FakeClock) -> KubernetesBackend:
    return KubernetesBackend(emulator.api_client(), ClusterSettings(), clock=clock)


def log_reads(emulator: KubernetesEmulator) -> int:
    with emulator.lock:
        return sum(1 for method, path in emulator.requests if method == "GET" and path.endswith("/log"))


def test_a_crash_looping_worker_is_failed_with_its_reason_and_last_log_lines_and_its_job_removed(
    backend: KubernetesBackend, emulator: KubernetesEmulator, clock: FakeClock
) -> None:
    worker = backend.start_worker(NEW_JOB)
    emulator.crash_loop(worker.worker_id, 2, message="no handler module workers.new_job.handler", log=HANDLER_TRACE)
    [listed] = backend.list_workers()
    assert listed.state is WorkerState.FAILED and listed.exit_code == 2 and listed.job_type == "new-job"
    reason = listed.failure_reason
    assert reason.startswith("CrashLoopBackOff: back-off 10s restarting failed container=worker")
    assert "exit code 2 (Error): no handler module workers.new_job.handler" in reason
    assert reason.endswith("last log lines:\n" + HANDLER_TRACE.rstrip("\n")), "the crashed run's log (previous=true)"
    [(kind, name, options)] = emulator.deletes
    assert (kind, name, options["propagationPolicy"]) == ("jobs", worker.worker_id, "Background")
    assert emulator.names("jobs") == [] and emulator.names("pods") == [], "it does not keep restarting"

    clock.now += KEEP_FINISHED_SECONDS - 1
    [again] = backend.list_workers()
    assert again.state is WorkerState.FAILED and again.failure_reason == reason, "still shown, from memory"
    assert backend.read_log(worker.worker_id) == HANDLER_TRACE, "its log outlives its pod, for the dashboard"
    assert log_reads(emulator) == 1 and len(emulator.deletes) == 1, "read once, deleted once"
    clock.now += 2
    assert backend.list_workers() == []


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("ImagePullBackOff", 'Back-off pulling image "worker-new:latest"'),
        ("ErrImagePull", "pull access denied for worker-new, repository does not exist"),
        ("InvalidImageName", 'Failed to apply default image tag "Worker New": invalid reference format'),
        ("CreateContainerConfigError", 'secret "queue-autoscaler-secrets" not found'),
    ],
)
def test_a_worker_that_cannot_start_is_failed_at_once_with_the_kubelets_reason(
    backend: KubernetesBackend, emulator: KubernetesEmulator, reason: str, message: str
) -> None:
    emulator.new_pods_waiting = (reason, message)
    worker = backend.start_worker(NEW_JOB)
    [listed] = backend.list_workers()
    assert listed.state is WorkerState.FAILED and listed.exit_code is None
    assert listed.failure_reason == f"{reason}: {message}"
    assert emulator.names("jobs") == [] and [name for _, name, _ in emulator.deletes] == [worker.worker_id]
    assert log_reads(emulator) == 0, "a container that never ran has no log to read"


def test_a_failed_job_carries_its_exit_code_termination_message_condition_and_log(
    backend: KubernetesBackend, emulator: KubernetesEmulator
) -> None:
    worker = backend.start_worker(NEW_JOB)
    emulator.set_pod(worker.worker_id, "Running")
    emulator.logs[f"{worker.worker_id}-pod"] += "connecting to amqp://rabbitmq:5672\nACCESS_REFUSED\n"
    emulator.finish_job(worker.worker_id, exit_code=3, message="broker refused the credentials\n")
    [listed] = backend.list_workers()
    assert listed.state is WorkerState.FAILED and listed.exit_code == 3
    assert listed.failure_reason.startswith(
        "exit code 3 (Error): broker refused the credentials; "
        "BackoffLimitExceeded: Job has reached the specified backoff limit\nlast log lines:\n"
    )
    assert listed.failure_reason.endswith("connecting to amqp://rabbitmq:5672\nACCESS_REFUSED")
    assert emulator.names("jobs") == []


def test_an_evicted_pod_is_failed_with_the_kubelets_reason_before_the_job_controller_notices(
    backend: KubernetesBackend, emulator: KubernetesEmulator, clock: FakeClock
) -> None:
    worker = backend.start_worker(NEW_JOB)
    clock.now += 3600  # long-running, then evicted: still news
    emulator.set_pod(worker.worker_id, "Failed")
    with emulator.lock:
        status = emulator.objects["pods"][("queue-autoscaler", f"{worker.worker_id}-pod")]["status"]
        status.update(reason="Evicted", message="The node was low on resource: memory.")
    [listed] = backend.list_workers()
    assert listed.state is WorkerState.FAILED
    assert listed.failure_reason == "Evicted: The node was low on resource: memory."
    assert emulator.names("jobs") == []


def test_a_succeeded_worker_is_listed_for_a_minute_and_its_job_removed(
    backend: KubernetesBackend, emulator: KubernetesEmulator, clock: FakeClock
) -> None:
    done, running = backend.start_worker(NEW_JOB), backend.start_worker(NEW_JOB)
    emulator.set_pod(running.worker_id, "Running")
    emulator.finish_job(done.worker_id)
    states = {w.worker_id: w.state for w in backend.list_workers()}
    assert states == {done.worker_id: WorkerState.SUCCEEDED, running.worker_id: WorkerState.RUNNING}
    assert emulator.names("jobs") == [running.worker_id]
    assert "worker starting" in backend.read_log(done.worker_id)
    clock.now += KEEP_FINISHED_SECONDS + 1
    assert [w.worker_id for w in backend.list_workers()] == [running.worker_id]
    with pytest.raises(WorkerLogNotFound):
        backend.read_log(done.worker_id)


def test_a_standby_reports_failures_but_deletes_nothing(emulator: KubernetesEmulator, clock: FakeClock) -> None:
    leader = KubernetesBackend(emulator.api_client(), ClusterSettings(), clock=clock)
    standby = KubernetesBackend(emulator.api_client(), ClusterSettings(), clock=clock, leadership=Standby())
    emulator.new_pods_waiting = ("ImagePullBackOff", "Back-off pulling image")
    worker = leader.start_worker(NEW_JOB)
    [listed] = standby.list_workers()
    assert listed.state is WorkerState.FAILED and emulator.names("jobs") == [worker.worker_id]
    with pytest.raises(NotLeading):
        standby.start_worker(NEW_JOB)
    standby.terminate(listed, NEW_JOB)  # finished: nothing to do
    assert emulator.deletes == [] and emulator.count("POST", "jobs") == 1, "refused before anything was sent"
    leader.list_workers()
    assert emulator.names("jobs") == [], "the leader removes it"


def test_a_pod_pending_past_the_start_timeout_is_failed_and_replaced_but_an_unschedulable_one_waits(
    emulator: KubernetesEmulator, clock: FakeClock
) -> None:
    backend = KubernetesBackend(
        emulator.api_client(), ClusterSettings(), StartLimits(unschedulable_grace=30, start_timeout=300), clock=clock
    )
    stuck, unplaced, no_pod = (backend.start_worker(NEW_JOB) for _ in range(3))
    emulator.set_waiting(stuck.worker_id, "ContainerCreating")
    emulator.set_pod(unplaced.worker_id, "Pending", unschedulable="0/3 nodes are available: 3 Insufficient cpu.")
    emulator.remove_pods(no_pod.worker_id)  # e.g. a ResourceQuota refused it
    clock.now += 299
    assert {w.state for w in backend.list_workers()} == {WorkerState.STARTING}
    clock.now += 2
    listed = {w.worker_id: w for w in backend.list_workers()}
    assert listed[stuck.worker_id].state is WorkerState.FAILED
    assert (
        listed[stuck.worker_id].failure_reason
        == "not started after 300 s: the pod is still Pending (ContainerCreating)"
    )
    assert listed[no_pod.worker_id].failure_reason.startswith("not started after 300 s: no pod was created")
    assert listed[unplaced.worker_id].state is WorkerState.STARTING
    assert listed[unplaced.worker_id].unschedulable_reason == "0/3 nodes are available: 3 Insufficient cpu."
    assert emulator.names("jobs") == [unplaced.worker_id], "the stuck ones are deleted, so they can be replaced"


def test_lists_are_read_in_pages(emulator: KubernetesEmulator, clock: FakeClock) -> None:
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings(), page_size=3, clock=clock)
    started = {backend.start_worker(NEW_JOB).worker_id for _ in range(8)}
    before = emulator.count("GET", "jobs"), emulator.count("GET", "pods")
    assert {w.worker_id for w in backend.list_workers()} == started
    assert (emulator.count("GET", "jobs"), emulator.count("GET", "pods")) == (before[0] + 3, before[1] + 3)
    emulator.expire_continue_tokens = True
    assert {w.worker_id for w in backend.list_workers()} == started, "an expired continue token restarts the list"


def test_leftover_finished_jobs_are_removed_a_few_per_tick_without_reading_their_logs(
    emulator: KubernetesEmulator, clock: FakeClock
) -> None:
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings(), clock=clock, finished_per_tick=10)
    for _ in range(15):
        emulator.finish_job(backend.start_worker(NEW_JOB).worker_id, exit_code=1)
    clock.now += 3600  # failed an hour ago, e.g. under a scaler that kept them (or no scaler at all)
    assert backend.list_workers() == [], "old news is not listed"
    assert len(emulator.names("jobs")) == 5
    assert backend.list_workers() == [] and emulator.names("jobs") == []
    assert log_reads(emulator) == 0


def test_a_type_whose_jobs_are_refused_is_reported_by_check_and_tried_again_after_a_backoff(
    backend: KubernetesBackend, emulator: KubernetesEmulator, clock: FakeClock
) -> None:
    other = JobType(name="other", queue="q_other")
    emulator.fail_next(403)
    with pytest.raises(KubernetesApiError):
        backend.start_worker(NEW_JOB)
    assert re.fullmatch(
        r"creating Job new-job-\S+: 403 Forbidden: injected 403 \(next try in 5 s\)", backend.check(NEW_JOB)
    )
    assert backend.check(other) is None
    clock.now += 5
    assert backend.check(NEW_JOB) is None, "one more try after the backoff"
    emulator.fail_next(422)
    with pytest.raises(KubernetesApiError):
        backend.start_worker(NEW_JOB)
    assert backend.check(NEW_JOB).endswith("422 Unprocessable Entity: injected 422 (next try in 10 s)")
    clock.now += 10
    backend.start_worker(NEW_JOB)
    assert backend.check(NEW_JOB) is None, "a Job created clears it"
