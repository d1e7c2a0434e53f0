"""The real control loop (`scaler.loop.Scaler`) with the Kubernetes backend against the emulated API server.

Queue counts and worker heartbeats are faked (no broker needed); everything
between them is the production code: the policy, the loop, the backend, the
official client and HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobtypes.config_watch import ConfigWatcher
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_api import KubernetesApiError
from scaler.backends.kubernetes_manifests import TYPE_LABEL, ClusterSettings
from scaler.loop import Scaler
from tests.support.configs import write_config
from tests.support.k8s_emulator import KubernetesEmulator, emulator  # noqa: F401 - the fixture
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
