"""The real control loop (`scaler.loop.Scaler`) with the Kubernetes backend against the emulated API server.

Queue counts and worker heartbeats are faked (no broker needed); everything
between them is the production code: the policy, the loop, the backend, the
official client and HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config_watch import ConfigWatcher
from harness.configs import write_config
from harness.k8s_emulator import KubernetesEmulator
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_api import KubernetesApiError
from scaler.backends.kubernetes_manifests import TYPE_LABEL, ClusterSettings
from scaler.budget import Budget
from scaler.loop import Scaler
from scaler.settings import ScalerSettings
from tests.support.k8s_fakes import FakeChannel, FakeClock, FakeStats

RENDER = {
    "queue": "q_render",
    "image": "registry.example/render:1.2",
    "threshold": 5,
    "burst_size": 3,
    "max_workers": 6,
    "idle_seconds": 10,
    "stop_grace_seconds": 20,
    "resources": {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": 1}},
}


@pytest.fixture()
def parts(emulator: KubernetesEmulator, tmp_path: Path):
    config = write_config(tmp_path, {"render": RENDER}, unique_queues=False)
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings())
    stats, channel, clock = FakeStats(), FakeChannel(), FakeClock()
    leader = {"value": True}
    scaler = Scaler(ConfigWatcher(config), backend, stats, channel, is_leader=lambda: leader["value"], clock=clock)
    return scaler, backend, stats, channel, clock, leader


def type_status(scaler: Scaler) -> dict:
    return scaler.board.document()["job_types"]["render"]


def test_burst_pending_unschedulable_and_scale_down_of_idle_workers_only(parts, emulator: KubernetesEmulator) -> None:
    scaler, backend, stats, channel, clock, _ = parts
    stats.set("q_render", 100)
    scaler.tick()
    jobs = emulator.names("jobs")
    assert len(jobs) == 3, "a burst of burst_size Jobs"
    assert {emulator.get("jobs", j)["metadata"]["labels"][TYPE_LABEL] for j in jobs} == {"render"}

    # Pending pods are starting workers: no second burst while they start, however large the backlog.
    for _ in range(3):
        clock.now += 1
        scaler.tick()
    assert len(emulator.names("jobs")) == 3
    assert type_status(scaler)["starting"] == 3

    # The scheduler cannot place them: after the grace period the reason is on the status API, no more bursts.
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    for job in jobs:
        emulator.set_pod(job, "Pending", unschedulable=message, since_seconds=31)
    clock.now += 1
    scaler.tick()
    status = type_status(scaler)
    assert status["state"] == "unschedulable" and message in status["reason"]
    assert {w["unschedulable_reason"] for w in scaler.board.document()["workers"]} == {message}
    assert len(emulator.names("jobs")) == 3

    # A GPU node arrives: the pods run; the backlog drains; two workers idle, one still busy.
    for job in jobs:
        emulator.set_pod(job, "Running")
    channel.beat(jobs[0], "busy", current="row-7")
    channel.beat(jobs[1], "idle")
    channel.beat(jobs[2], "idle")
    stats.set("q_render", 0, unacked=0)
    clock.now += 1
    scaler.tick()
    assert channel.stop_requests == []
    clock.now += 11
    scaler.tick()
    assert sorted(channel.stop_requests) == sorted(jobs[1:]), "only the idle workers are asked to stop"
    assert len(emulator.names("jobs")) == 3 and emulator.deletes == [], "asked over AMQP first, no Job deleted yet"

    # One idle worker exits by itself (its Job completes and is removed once reported); the other ignores the
    # request past the grace period and its Job is deleted with the grace period.
    emulator.finish_job(jobs[1])
    clock.now += 21
    scaler.tick()
    deletes = {name: options for _, name, options in emulator.deletes}
    assert sorted(deletes) == sorted(jobs[1:])
    assert deletes[jobs[2]]["gracePeriodSeconds"] == 20 and deletes[jobs[1]].get("gracePeriodSeconds") is None
    assert emulator.names("jobs") == [jobs[0]], "only the busy worker's Job stays"
    assert {w["id"]: w["state"] for w in scaler.board.document()["workers"]}[jobs[1]] == "succeeded"


def test_a_standby_replica_observes_but_never_creates_or_deletes(parts, emulator: KubernetesEmulator) -> None:
    scaler, _, stats, _, clock, leader = parts
    leader["value"] = False
    stats.set("q_render", 100)
    for _ in range(3):
        scaler.tick()
        clock.now += 1
    assert emulator.names("jobs") == []
    assert scaler.board.document()["leader"] is False
    leader["value"] = True
    scaler.tick()
    assert len(emulator.names("jobs")) == 3


def test_api_errors_never_crash_the_loop_nor_double_a_burst(parts, emulator: KubernetesEmulator) -> None:
    scaler, _, stats, _, clock, _ = parts
    stats.set("q_render", 100)
    emulator.fail_next(*[500] * 4)  # every attempt of this tick's list of Jobs fails
    with pytest.raises(KubernetesApiError, match="listing worker Jobs: 500 Internal Server Error: injected 500"):
        scaler.tick()  # Scaler.run logs this and carries on
    assert emulator.names("jobs") == []
    emulator.fail_next(429, 503, 409)  # throttled and failing on the first attempts of the next tick
    clock.now += 1
    scaler.tick()
    assert len(emulator.names("jobs")) == 3
    clock.now += 1
    scaler.tick()
    assert len(emulator.names("jobs")) == 3, "the Jobs created under errors are seen: no second burst"


NEW_JOB = {"queue": "queue_new", "image": "worker-new:latest", "threshold": 10}
HANDLER_ERROR = "no handler module workers.new_job.handler"


@pytest.fixture()
def simulated(tmp_path: Path):
    """The loop, the backend and the emulated API server on one clock the test moves."""
    clock = FakeClock()
    clock.now = 1_800_000_000.0
    server = KubernetesEmulator(clock=clock)

    def build(job_types: dict, settings: ScalerSettings | None = None):
        config = write_config(tmp_path, job_types, unique_queues=False)
        backend = KubernetesBackend(server.api_client(), ClusterSettings(), clock=clock)
        stats, channel = FakeStats(), FakeChannel()
        scaler = Scaler(ConfigWatcher(config), backend, stats, channel, clock=clock, settings=settings)
        return scaler, stats, channel

    yield server, clock, build
    server.close()


@pytest.mark.parametrize("failure", ["CrashLoopBackOff", "ImagePullBackOff"])
def test_a_type_whose_pods_cannot_run_is_failing_with_their_reason_and_creates_a_handful_of_jobs(
    simulated, failure: str
) -> None:
    """The seed's `new-job` entry before its handler (or its image) exists, 100 rows waiting, 5 minutes."""
    server, clock, build = simulated
    scaler, stats, channel = build({"new-job": NEW_JOB})
    stats.set("queue_new", 100)
    if failure == "ImagePullBackOff":
        server.new_pods_waiting = (failure, 'Back-off pulling image "worker-new:latest"')
    for _ in range(300):
        if failure == "CrashLoopBackOff":
            for name in server.names("jobs"):  # the kubelet: the container exits 2 and is restarted after a delay
                server.crash_loop(name, 2, message=HANDLER_ERROR, log=f"ModuleNotFoundError: {HANDLER_ERROR}\n")
        clock.now += 1
        scaler.tick()
    status = scaler.board.document()["job_types"]["new-job"]
    assert status["state"] == "failing" and failure in status["reason"], status["reason"]
    if failure == "CrashLoopBackOff":
        assert "exit code 2 (Error): " + HANDLER_ERROR in status["reason"]
    created = server.count("POST", "jobs")
    print(f"{failure}: {created} Jobs created in 5 simulated minutes")
    assert created <= 10, f"{created} Jobs in 5 minutes (the README states at most 10)"
    assert len(server.names("jobs")) <= 1, "failed Jobs are removed, none keeps restarting"
    assert stats.queues["queue_new"].ready == 100, "the rows stay in the queue"

    # The handler (or the image) is fixed and the operator presses Retry: workers start at once, run and
    # consume, and the type is no longer failing.
    server.new_pods_waiting = None
    scaler.controls.retry("new-job")
    clock.now += 1
    scaler.tick()
    for name in server.names("jobs"):
        server.set_pod(name, "Running")
        channel.beat(name, "busy", current="row-1")
    clock.now += 1
    scaler.tick()
    assert scaler.board.document()["job_types"]["new-job"]["state"] != "failing"
    assert server.live_jobs() > 1, "no longer one probe at a time"


def test_a_gpu_budget_counts_starting_running_and_stopping_workers(simulated) -> None:
    server, clock, build = simulated
    server.linger_pods_on_delete = True
    render = {**RENDER, "burst_size": 6}
    scaler, stats, _ = build({"render": render}, ScalerSettings(budget=Budget(resources={"nvidia.com/gpu": 4})))
    stats.set("q_render", 500)
    scaler.tick()
    assert len(server.names("jobs")) == 4, "4 GPUs, 1 per worker: 4 of the 6 the burst wants"
    for name in server.names("jobs"):
        server.set_pod(name, "Running")
    clock.now += 1
    scaler.tick()
    assert len(server.names("jobs")) == 4
    stopping = server.names("jobs")[0]
    worker = next(w for w in scaler.backend.list_workers() if w.worker_id == stopping)
    scaler.backend.terminate(worker, scaler.known["render"])  # its Job is deleted, its pod still terminating
    for _ in range(3):
        clock.now += 1
        scaler.tick()
    assert len(server.names("jobs")) == 3, "the terminating pod still holds its GPU"
    assert scaler.board.document()["job_types"]["render"]["stopping"] == 1
    server.remove_pods(stopping)
    clock.now += 1
    scaler.tick()
    assert len(server.names("jobs")) == 4, "its GPU is free once the pod is gone"


def test_a_type_whose_jobs_are_forbidden_is_failing_with_the_servers_words_and_backs_off(simulated) -> None:
    server, clock, build = simulated
    scaler, stats, _ = build({"new-job": NEW_JOB})
    stats.set("queue_new", 100)
    forbidden = 'jobs.batch is forbidden: User "system:serviceaccount:queue-autoscaler:scaler" cannot create resource'
    server.refuse_job_creates = (403, forbidden)
    for _ in range(300):
        clock.now += 1
        scaler.tick()
    status = scaler.board.document()["job_types"]["new-job"]
    assert status["state"] == "failing" and f"403 Forbidden: {forbidden}" in status["reason"]
    attempts = server.count("POST", "jobs")
    print(f"{attempts} refused creates in 5 simulated minutes")
    assert attempts <= 6, f"{attempts} creates refused in 5 minutes (the README states at most 6)"
