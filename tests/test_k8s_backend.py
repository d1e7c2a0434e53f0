"""The Kubernetes backend and leader election, through the official client, against an emulated API server."""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config

from common.config import JobType
from harness.k8s_emulator import KubernetesEmulator
from harness.processes import REPO
from harness.waiting import wait_until
from scaler.backends import kubernetes_manifests
from scaler.backends.base import WorkerLogNotFound, WorkerState
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_api import KubernetesApiError
from scaler.backends.kubernetes_manifests import TYPE_LABEL, ClusterSettings
from scaler.leader import LeaseElector
from scaler.policy import QueueStats, TypeMemory, WorkerView, decide
from tests.support.k8s_fakes import FakeClock

GPU = JobType(
    name="render",
    queue="q_render",
    image="registry.example/render:1.2",
    threshold=5,
    burst_size=3,
    max_workers=6,
    env={"MODE": "fast"},
    resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
    node_selector={"gpu": "true"},
    tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    stop_grace_seconds=45,
)


@pytest.fixture()
def backend(emulator: KubernetesEmulator) -> KubernetesBackend:
    return KubernetesBackend(emulator.api_client(), ClusterSettings())


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
    assert env["RABBITMQ_URL"]["valueFrom"]["secretKeyRef"] == {"name": "rabbitmq-worker-render", "key": "url"}
    assert "fieldRef" in env["WORKER_ID"]["valueFrom"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_pending_pods_count_as_starting_and_stop_further_bursts(
    backend: KubernetesBackend, emulator: KubernetesEmulator
) -> None:
    policy_step(backend, GPU, ready=100)
    workers = backend.list_workers()
    assert {w.state for w in workers} == {WorkerState.STARTING}
    assert policy_step(backend, GPU, ready=100) == 0, "starting workers cover the backlog"
    for name in emulator.names("jobs"):
        emulator.set_pod(name, "Running")
    assert {w.state for w in backend.list_workers()} == {WorkerState.RUNNING}
    assert policy_step(backend, GPU, ready=100) == 3
    assert len(emulator.names("jobs")) == 6


def test_unschedulable_reason_surfaces_after_the_grace_period(
    backend: KubernetesBackend, emulator: KubernetesEmulator
) -> None:
    worker = backend.start_worker(GPU)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    emulator.set_pod(worker.worker_id, "Pending", unschedulable=message, since_seconds=5)
    assert backend.list_workers()[0].unschedulable_reason is None, "not before the grace period"
    emulator.set_pod(worker.worker_id, "Pending", unschedulable=message, since_seconds=31)
    [listed] = backend.list_workers()
    assert listed.unschedulable_reason == message
    views = [WorkerView(listed.worker_id, listed.state, 0, unschedulable_reason=listed.unschedulable_reason)]
    decision = decide(GPU, QueueStats(500, 0), views, TypeMemory(), now=0)
    assert (
        decision.start == 0 and decision.state == "unschedulable" and "Insufficient nvidia.com/gpu" in decision.reason
    )


def test_terminate_removes_only_that_workers_job(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    first, second = backend.start_worker(GPU), backend.start_worker(GPU)
    backend.terminate(first, GPU)
    assert emulator.names("jobs") == [second.worker_id]
    backend.terminate(first, GPU)  # idempotent: already gone
    emulator.finish_job(second.worker_id)
    [finished] = backend.list_workers()
    assert finished.state is WorkerState.SUCCEEDED
    assert emulator.names("jobs") == [], "a finished Job is removed once it has been reported"
    backend.terminate(finished, GPU)
    assert [name for _, name, _ in emulator.deletes] == [first.worker_id, second.worker_id]


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_injected_api_errors_are_retried_without_duplicates(
    backend: KubernetesBackend, emulator: KubernetesEmulator, status: int
) -> None:
    emulator.fail_next(status, status)
    worker = backend.start_worker(GPU)
    assert emulator.names("jobs") == [worker.worker_id]
    emulator.fail_next(status)
    assert len(backend.list_workers()) == 1


def test_create_that_succeeded_before_a_failed_answer_is_not_doubled(
    backend: KubernetesBackend, emulator: KubernetesEmulator
) -> None:
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
    with pytest.raises(KubernetesApiError) as raised:
        backend.list_workers()
    assert (
        str(raised.value) == "listing worker Jobs: 500 Internal Server Error: injected 500"
        and raised.value.status == 500
    )


def test_pod_logs_for_the_dashboard(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    worker = backend.start_worker(GPU)
    assert worker.worker_id in backend.read_log(worker.worker_id)
    with pytest.raises(WorkerLogNotFound):
        backend.read_log("nobody")


def test_leader_election_hands_over_when_the_leader_stops_renewing(emulator: KubernetesEmulator) -> None:
    clock = FakeClock()
    first = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=15, clock=clock)
    second = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-b", duration=15, clock=clock)
    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False
    assert first.is_leader() and not second.is_leader()
    clock.now += 8
    assert first.try_acquire_or_renew() is True, "the holder renews"
    assert second.try_acquire_or_renew() is False, "a renewed lease is never taken, however old the standby's view"
    # The leader stops renewing (hung, partitioned). It steps down after the renew deadline (10 s)...
    clock.now += 11
    assert not first.is_leader()
    assert second.try_acquire_or_renew() is False, "...a third of a lease before the standby may take over"
    clock.now += 4.5
    assert second.try_acquire_or_renew() is True, "the record did not change for a whole lease duration"
    lease = emulator.get("leases", "scaler")
    assert lease["spec"]["holderIdentity"] == "replica-b" and lease["spec"]["leaseTransitions"] == 1
    assert first.try_acquire_or_renew() is False and not first.is_leader()
    assert sum(1 for e in (first, second) if e.is_leader()) == 1


def test_takeover_does_not_trust_the_holders_clock(emulator: KubernetesEmulator) -> None:
    """A renewTime far in the past (a leader node whose clock is behind) is no reason to take over."""
    clock = FakeClock()
    first = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=15, clock=clock)
    second = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-b", duration=15, clock=clock)
    assert first.try_acquire_or_renew() is True
    with emulator.lock:
        emulator.objects["leases"][("queue-autoscaler", "scaler")]["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z"
    assert second.try_acquire_or_renew() is False
    clock.now += 16
    assert second.try_acquire_or_renew() is True


def test_racing_replicas_one_wins(emulator: KubernetesEmulator) -> None:
    """Both read the expired Lease; the second write carries a stale resourceVersion and gets 409."""
    clock = FakeClock()
    electors = [
        LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", f"replica-{n}", duration=15, clock=clock)
        for n in range(3)
    ]
    results = [elector.try_acquire_or_renew() for elector in electors]
    assert results == [True, False, False]
    original = emulator.handle
    stale: dict[str, str] = {}

    def stale_reads(method, path, body):  # every replica sees the same version, as in a real race
        status, answer = original(method, path, body)
        if method == "GET" and path.endswith("/leases/scaler") and status == 200:
            stale.setdefault("version", answer["metadata"]["resourceVersion"])
            answer = {
                **answer,
                "metadata": {**answer["metadata"], "resourceVersion": stale["version"]},
                "spec": {**answer["spec"], "holderIdentity": ""},
            }
        return status, answer

    emulator.handle = stale_reads
    results = [elector.try_acquire_or_renew() for elector in electors[1:]]
    assert results == [True, False], "the first write wins, the second is refused with 409 Conflict"


def test_leader_release_lets_the_standby_in_at_once(emulator: KubernetesEmulator) -> None:
    first = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=30).start()
    second = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-b", duration=30)
    wait_until(first.is_leader, timeout=10, what="the first replica to lead")
    assert second.try_acquire_or_renew() is False
    first.stop()
    assert not first.is_leader()
    assert emulator.get("leases", "scaler")["spec"].get("holderIdentity") in (None, "")
    assert second.try_acquire_or_renew() is True


def test_leader_keeps_leading_through_a_short_api_outage(emulator: KubernetesEmulator) -> None:
    clock = FakeClock()
    leader = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=15, clock=clock)
    assert leader.try_acquire_or_renew() is True
    emulator.fail_next(500)
    clock.now += 2
    with pytest.raises(ApiException):
        leader.try_acquire_or_renew()
    assert leader.is_leader(), "one failed renewal inside the renew deadline keeps the leadership"
    clock.now += 9
    assert not leader.is_leader(), "past the renew deadline without a renewal it steps down"
    assert leader.try_acquire_or_renew() is True and leader.is_leader()


def test_terminate_deletes_with_the_grace_period_once_and_the_pod_stays_stopping(
    backend: KubernetesBackend,
    emulator: KubernetesEmulator,
) -> None:
    emulator.linger_pods_on_delete = True
    worker, other = backend.start_worker(GPU), backend.start_worker(GPU)
    emulator.set_pod(worker.worker_id, "Running")
    emulator.set_pod(other.worker_id, "Running")
    backend.terminate(worker, GPU)
    [(kind, name, options)] = emulator.deletes
    assert (kind, name) == ("jobs", worker.worker_id)
    assert options["gracePeriodSeconds"] == 45 and options["propagationPolicy"] == "Background"
    states = {w.worker_id: w.state for w in backend.list_workers()}
    assert states == {worker.worker_id: WorkerState.STOPPING, other.worker_id: WorkerState.RUNNING}, (
        "the terminating pod of a deleted Job is still a (stopping) worker"
    )
    backend.terminate(worker, GPU)
    backend.terminate(worker, GPU)
    assert len(emulator.deletes) == 1, "the loop calling again every tick does not delete again"
    emulator.remove_pods(worker.worker_id)
    assert [w.worker_id for w in backend.list_workers()] == [other.worker_id]


def test_one_list_of_jobs_and_one_of_pods_per_tick(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    other = JobType(name="other", queue="q_other")
    for job_type in (GPU, GPU, other, other):
        backend.start_worker(job_type)
    before = (emulator.count("GET", "jobs"), emulator.count("GET", "pods"))
    workers = backend.list_workers()
    assert sorted(w.job_type for w in workers) == ["other", "other", "render", "render"]
    assert (emulator.count("GET", "jobs"), emulator.count("GET", "pods")) == (before[0] + 1, before[1] + 1)
    assert backend.calls == 1


def test_jobs_of_other_tools_are_ignored(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    with emulator.lock:
        emulator.objects["jobs"][("queue-autoscaler", "backup")] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "backup", "namespace": "queue-autoscaler", "labels": {"app": "backup"}},
            "spec": {"template": {"spec": {"containers": []}}},
        }
    backend.start_worker(GPU)
    assert [w.job_type for w in backend.list_workers()] == ["render"]


def test_worker_creation_survives_a_timeout(emulator: KubernetesEmulator) -> None:
    """A request that times out is retried; the Job exists once."""
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings(), request_timeout=0.5)
    original = emulator.handle
    slow = {"left": 1}

    def slow_once(method, path, body):
        if method == "POST" and slow["left"]:
            slow["left"] -= 1
            answer = original(method, path, body)  # created, but the answer comes too late
            import time as real_time

            real_time.sleep(1)
            return answer
        return original(method, path, body)

    emulator.handle = slow_once
    worker = backend.start_worker(GPU)
    assert emulator.names("jobs") == [worker.worker_id]
    assert emulator.count("POST", "jobs") == 2


def test_errors_that_cannot_pass_are_not_retried(backend: KubernetesBackend, emulator: KubernetesEmulator) -> None:
    """403 (RBAC) or 422 (an invalid spec) will not pass by retrying: one request, a readable error."""
    emulator.fail_next(403)
    with pytest.raises(KubernetesApiError, match=r"^creating Job render-\S+: 403 Forbidden: injected 403$"):
        backend.start_worker(GPU)
    assert emulator.count("POST", "jobs") == 1 and emulator.names("jobs") == []


def test_from_environment_with_a_kubeconfig(
    emulator: KubernetesEmulator, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulated",
                "clusters": [{"name": "emulated", "cluster": {"server": emulator.url}}],
                "users": [{"name": "me", "user": {"token": "secret-token"}}],
                "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "me"}}],
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("SCALER_NAMESPACE", "team-a")
    monkeypatch.setenv("WORKER_SECRET", "my-secret")
    monkeypatch.setenv("SCALER_UNSCHEDULABLE_GRACE_SECONDS", "5")
    backend = KubernetesBackend.from_environment()
    try:
        assert backend.namespace == "team-a" and backend.limits.unschedulable_grace == 5
        worker = backend.start_worker(GPU)
        job = emulator.get("jobs", worker.worker_id, namespace="team-a")
        env = {item["name"]: item for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RABBITMQ_URL"]["valueFrom"]["secretKeyRef"]["name"] == "my-secret"
        assert [w.worker_id for w in backend.list_workers()] == [worker.worker_id]
    finally:
        backend.close()
        client.Configuration.set_default(client.Configuration())


def test_from_environment_in_a_pod(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a Pod: the service account's token, CA and namespace; the API server from KUBERNETES_SERVICE_*."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("not really a certificate")
    (account / "namespace").write_text("from-the-pod\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(kubernetes_manifests, "SERVICE_ACCOUNT_NAMESPACE_FILE", str(account / "namespace"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("SCALER_NAMESPACE", raising=False)
    try:
        backend = KubernetesBackend.from_environment()
        configuration = backend.batch.api_client.configuration
        assert configuration.host == "https://10.96.0.1:443"
        assert configuration.auth_settings()["BearerToken"]["value"].lower() == "bearer pod-token"
        assert backend.namespace == "from-the-pod"
        backend.close()
    finally:
        client.Configuration.set_default(client.Configuration())


def test_the_role_grants_exactly_the_verbs_the_scaler_uses(emulator: KubernetesEmulator) -> None:
    """Every request of a whole life (list, create, logs, delete, elect, renew, release) maps to a verb the
    Role in infra/k8s grants, and the Role grants nothing the scaler never uses."""
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings())
    elector = LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "replica-a", duration=15)
    elector.try_acquire_or_renew()
    elector.try_acquire_or_renew()
    worker = backend.start_worker(GPU)
    backend.list_workers()
    backend.read_log(worker.worker_id)
    backend.terminate(worker, GPU)
    elector.stop()
    used = set()
    for method, path in emulator.requests:
        parts = path.strip("/").split("/")
        resource = parts[parts.index("namespaces") + 2]
        named = len(parts) > parts.index("namespaces") + 3
        if path.endswith("/log"):
            resource = f"{resource}/log"
        verb = {
            "GET": "get" if named else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[method]
        used.add((resource, verb))
    role = next(
        d for d in yaml.safe_load_all((REPO / "infra" / "k8s" / "scaler-rbac.yaml").read_text()) if d["kind"] == "Role"
    )
    granted = {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert used == granted


def test_a_taken_name_on_the_first_attempt_is_a_collision_not_our_job(
    backend: KubernetesBackend, emulator: KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = backend.start_worker(GPU).worker_id
    names = iter([taken, "render-fresh-name"])
    monkeypatch.setattr("scaler.backends.kubernetes.new_worker_id", lambda job_type: next(names))
    worker = backend.start_worker(GPU)
    assert worker.worker_id == "render-fresh-name"
    assert sorted(emulator.names("jobs")) == sorted([taken, "render-fresh-name"]), "two workers, not one counted twice"
