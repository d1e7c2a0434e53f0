"""The Kubernetes backend and leader election, through the official client, against an emulated API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client.exceptions import ApiException

from jobtypes.config import JobType
from scaler.backends.base import WorkerState
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_manifests import TYPE_LABEL, ClusterSettings
from scaler.leader import LeaseElector
from scaler.policy import QueueStats, TypeMemory, WorkerView, decide
from tests.support.k8s_emulator import KubernetesEmulator
from tests.support.waiting import wait_until

GPU = JobType(
    name="render", queue="q_render", image="registry.example/render:1.2", threshold=5, burst_size=3, max_workers=6,
    env={"MODE": "fast"}, resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
    node_selector={"gpu": "true"}, tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    stop_grace_seconds=45,
)


@pytest.fixture()
def emulator() -> Iterator[KubernetesEmulator]:
    created = KubernetesEmulator()
    yield created
    created.close()


@pytest.fixture()
def backend(emulator: KubernetesEmulator) -> KubernetesBackend:
    return KubernetesBackend(emulator.api_client(), ClusterSettings(), unschedulable_grace=30)


def policy_step(backend: KubernetesBackend, job_type: JobType, ready: int) -> int:
    """One tick of the real policy against the backend: returns how many workers it started."""
    live = [w for w in backend.list_workers() if not w.state.finished]
    views = [WorkerView(w.worker_id, w.state, w.started_at, unschedulable_reason=w.unschedulable_reason) for w in live]
    decision = decide(job_type, QueueStats(ready, 0), views, TypeMemory(), now=0.0)
    for _ in range(decision.start):
        backend.start_worker(job_type)
    return decision.start


def test_burst_creates_jobs_with_the_type_spec(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    assert policy_step(backend, GPU, ready=100) == 3
    names = emulator.names("jobs")
    assert len(names) == 3 and all(name.startswith("render-") and len(name) <= 63 for name in names)
    job = emulator.get("jobs", names[0])
    assert job["metadata"]["labels"][TYPE_LABEL] == "render"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "queue-autoscaler"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/render:1.2" and container["args"] == ["render"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"gpu": "true"} and pod["tolerations"][0]["key"] == "gpu"
    assert pod["terminationGracePeriodSeconds"] == 45 and pod["restartPolicy"] == "Never"
    env = {item["name"]: item for item in container["env"]}
    assert env["MODE"]["value"] == "fast"
    assert env["RABBITMQ_URL"]["valueFrom"]["secretKeyRef"]["name"] == "queue-autoscaler-secrets"
    assert "fieldRef" in env["WORKER_ID"]["valueFrom"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_pending_pods_count_as_starting_and_stop_further_bursts(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    policy_step(backend, GPU, ready=100)
    workers = backend.list_workers()
    assert {w.state for w in workers} == {WorkerState.STARTING}
    assert policy_step(backend, GPU, ready=100) == 0, "starting workers cover the backlog"
    for name in emulator.names("jobs"):
        emulator.set_pod(name, "Running")
    assert {w.state for w in backend.list_workers()} == {WorkerState.RUNNING}
    assert policy_step(backend, GPU, ready=100) == 3
    assert len(emulator.names("jobs")) == 6


def test_unschedulable_reason_surfaces_after_the_grace_period(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    worker = backend.start_worker(GPU)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    emulator.set_pod(worker.worker_id, "Pending", unschedulable=message, since_seconds=5)
    assert backend.list_workers()[0].unschedulable_reason is None, "not before the grace period"
    emulator.set_pod(worker.worker_id, "Pending", unschedulable=message, since_seconds=31)
    [listed] = backend.list_workers()
    assert listed.unschedulable_reason == message
    views = [WorkerView(listed.worker_id, listed.state, 0, unschedulable_reason=listed.unschedulable_reason)]
    decision = decide(GPU, QueueStats(500, 0), views, TypeMemory(), now=0)
    assert decision.start == 0 and decision.state == "unschedulable" and "Insufficient nvidia.com/gpu" in decision.reason


def test_terminate_removes_only_that_workers_job(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    first, second = backend.start_worker(GPU), backend.start_worker(GPU)
    backend.terminate(first, GPU)
    assert emulator.names("jobs") == [second.worker_id]
    backend.terminate(first, GPU)  # idempotent: already gone
    emulator.finish_job(second.worker_id)
    [finished] = backend.list_workers()
    assert finished.state is WorkerState.SUCCEEDED
    assert emulator.names("jobs") == [second.worker_id], "finished Jobs stay as records until their TTL"


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_injected_api_errors_are_retried_without_duplicates(backend: KubernetesBackend, emulator: KubernetesEmulator, status: int) -> None:
    emulator.fail_next(status, status)
    worker = backend.start_worker(GPU)
    assert emulator.names("jobs") == [worker.worker_id]
    emulator.fail_next(status)
    assert len(backend.list_workers()) == 1


def test_create_that_succeeded_before_a_failed_answer_is_not_doubled(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    original = emulator._create
    calls = []

    def create_then_lose_the_answer(kind, namespace, body):
        calls.append(body["metadata"]["name"])
        status, answer = original(kind, namespace, body)
        return (500, {"kind": "Status", "code": 500, "message": "lost"}) if len(calls) == 1 else (status, answer)

    emulator._create = create_then_lose_the_answer
    worker = backend.start_worker(GPU)
    assert calls == [worker.worker_id, worker.worker_id]
    assert emulator.names("jobs") == [worker.worker_id]


def test_persistent_errors_surface_to_the_loop(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    emulator.fail_next(*[500] * 10)
    with pytest.raises(ApiException):
        backend.list_workers()


def test_pod_logs_for_the_dashboard(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    worker = backend.start_worker(GPU)
    assert worker.worker_id in backend.read_log(worker.worker_id)
    with pytest.raises(KeyError):
        backend.read_log("nobody")


def test_leader_election_hands_over(emulator: KubernetesEmulator) -> None:
    first = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=2)
    second = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-b", duration=2)
    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False
    assert first.is_leader() and not second.is_leader()
    assert first.try_acquire_or_renew() is True, "the holder renews"
    # the leader stops renewing: once its lease has expired the standby takes over
    with emulator.lock:
        emulator.objects["leases"][("queue-autoscaler", "scaler")]["spec"]["renewTime"] = "2020-01-01T00:00:00Z"
    assert second.try_acquire_or_renew() is True
    assert emulator.get("leases", "scaler")["spec"]["holderIdentity"] == "replica-b"
    assert first.try_acquire_or_renew() is False and not first.is_leader()


def test_leader_release_lets_the_standby_in_at_once(emulator: KubernetesEmulator) -> None:
    first = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=30).start()
    second = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-b", duration=30)
    wait_until(first.is_leader, timeout=10, what="the first replica to lead")
    assert second.try_acquire_or_renew() is False
    first.stop()
    assert second.try_acquire_or_renew() is True
