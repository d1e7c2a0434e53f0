"""The control loop with the Kubernetes backend against the emulated API server: a GPU budget shared by
priority, the pause/drain set kept on a Lease across a leader change, and the gauges of a removed type.

Queue counts and heartbeats are faked (no broker); the policy, the budget, the loop, the backend, the
official client and HTTP are the production code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from common.config_watch import ConfigWatcher
from harness.configs import write_config
from harness.k8s_emulator import KubernetesEmulator
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_manifests import TYPE_LABEL, ClusterSettings
from scaler.budget import Budget
from scaler.loop import Scaler
from scaler.operator_controls import ANNOTATION, Controls, LeaseControlStore
from scaler.policy import Control
from scaler.settings import ScalerSettings
from tests.support.k8s_fakes import FakeChannel, FakeClock, FakeStats

GPU = {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "500m"}}
RENDER = {"queue": "q_render", "threshold": 5, "burst_size": 3, "max_workers": 6, "resources": GPU}
URGENT = {"queue": "q_urgent", "threshold": 0, "burst_size": 2, "max_workers": 2, "priority": 10, "resources": GPU}


def make_scaler(emulator: KubernetesEmulator, config: Path, budget: Budget, controls: Controls | None = None):
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings())
    stats, channel, clock = FakeStats(), FakeChannel(), FakeClock()
    settings = ScalerSettings(backend="kubernetes", budget=budget)
    scaler = Scaler(ConfigWatcher(config), backend, stats, channel, clock=clock, settings=settings, controls=controls)
    return scaler, stats, channel, clock


def live_jobs(emulator: KubernetesEmulator, job_type: str | None = None) -> list[str]:
    names = []
    for name in emulator.names("jobs"):
        job = emulator.get("jobs", name)
        if job.get("status", {}).get("succeeded") or job.get("status", {}).get("failed"):
            continue
        if job_type is None or job["metadata"]["labels"][TYPE_LABEL] == job_type:
            names.append(name)
    return names


def test_a_gpu_budget_is_shared_by_priority_with_graceful_preemption(emulator: KubernetesEmulator, tmp_path) -> None:
    config = write_config(tmp_path, {"render": RENDER, "urgent": URGENT}, unique_queues=False)
    scaler, stats, channel, clock = make_scaler(emulator, config, Budget(resources={"nvidia.com/gpu": 2}))
    stats.set("q_render", 100)
    scaler.tick()
    render = live_jobs(emulator, "render")
    assert len(render) == 2, "a burst of 3 is cut to the 2 GPUs of the budget"
    document = scaler.board.document()
    assert "(budget allows +2)" in document["events"][0]["reason"]
    assert document["budget"]["resources"] == {"nvidia.com/gpu": {"used": 0.0, "total": 2.0}}

    for job in render:
        emulator.set_pod(job, "Running")
        channel.beat(job, "busy", current="row")
    clock.now += 1
    scaler.tick()
    waiting = scaler.board.document()["job_types"]["render"]
    assert (waiting["state"], waiting["code"], waiting["share"]) == ("waiting-for-budget", "budget", 2)
    assert waiting["reason"].startswith("waiting for budget: nvidia.com/gpu 2/2 held by render (priority 0)")

    # Urgent work arrives: render's busy workers are asked to stop after their row; no Job is deleted or added.
    stats.set("q_urgent", 10)
    clock.now += 1
    scaler.tick()
    assert sorted(channel.stop_requests) == sorted(render)
    assert emulator.deletes == [] and live_jobs(emulator, "urgent") == []
    status = scaler.board.document()["job_types"]
    assert (status["render"]["code"], status["urgent"]["code"]) == ("preempted", "budget")
    assert status["urgent"]["reason"] == (
        "waiting for budget: nvidia.com/gpu 2/2 held by render (priority 0), urgent (priority 10) first"
    )

    # One render worker finishes its row and exits: one GPU is free, urgent gets it; render takes nothing back.
    emulator.finish_job(render[0])
    clock.now += 1
    scaler.tick()
    assert len(live_jobs(emulator, "urgent")) == 1 and live_jobs(emulator, "render") == [render[1]]
    emulator.finish_job(render[1])
    first_urgent = live_jobs(emulator, "urgent")[0]
    emulator.set_pod(first_urgent, "Running")
    channel.beat(first_urgent, "busy", current="row")
    for _ in range(3):
        clock.now += 1
        scaler.tick()
        assert len(live_jobs(emulator)) <= 2, "never more GPUs requested than the budget"
    assert len(live_jobs(emulator, "urgent")) == 2 and live_jobs(emulator, "render") == []
    assert scaler.board.document()["job_types"]["render"]["code"] == "budget"


def test_the_pause_set_lives_on_a_lease_and_a_new_leader_honours_it(emulator: KubernetesEmulator, tmp_path) -> None:
    config = write_config(tmp_path, {"render": RENDER}, unique_queues=False)
    first = Controls(LeaseControlStore(emulator.api_client(), "queue-autoscaler", "scaler-controls"))
    first.set("render", Control.PAUSED)
    annotations = emulator.get("leases", "scaler-controls")["metadata"]["annotations"]
    assert json.loads(annotations[ANNOTATION]) == {"render": "paused"}

    # Another replica, started before the pause, becomes the leader: it reads the Lease and starts nothing.
    standby = Controls(LeaseControlStore(emulator.api_client(), "queue-autoscaler", "scaler-controls"))
    scaler, stats, _, clock = make_scaler(emulator, config, Budget(), controls=standby)
    stats.set("q_render", 100)
    scaler.tick()
    assert emulator.names("jobs") == []
    assert scaler.board.document()["job_types"]["render"]["state"] == "paused"

    first.set("render", Control.RUN)
    standby.refresh(force=True)
    clock.now += 1
    scaler.tick()
    assert len(emulator.names("jobs")) == 3
    assert json.loads(emulator.get("leases", "scaler-controls")["metadata"]["annotations"][ANNOTATION]) == {}


def test_the_gauges_of_a_removed_type_are_cleared(emulator: KubernetesEmulator, tmp_path) -> None:
    config = write_config(tmp_path, {"render": RENDER, "gone": {**URGENT, "queue": "q_gone"}}, unique_queues=False)
    scaler, stats, _, clock = make_scaler(emulator, config, Budget(max_workers=4))
    scaler.tick()
    labels = {"job_type": "gone"}
    assert REGISTRY.get_sample_value("scaler_queue_ready", labels) == 0
    assert REGISTRY.get_sample_value("scaler_desired_workers", labels) == 0
    assert REGISTRY.get_sample_value("scaler_budget_total", {"resource": "workers"}) == 4
    write_config(tmp_path, {"render": RENDER}, unique_queues=False)
    clock.now += 1
    scaler.tick()
    for metric in ("scaler_queue_ready", "scaler_desired_workers", "scaler_budget_share"):
        assert REGISTRY.get_sample_value(metric, labels) is None, metric
    assert REGISTRY.get_sample_value("scaler_workers", {"job_type": "gone", "state": "running"}) is None
    assert REGISTRY.get_sample_value("scaler_queue_ready", {"job_type": "render"}) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ('{"nvidia.com/gpu": 4, "cpu": "8"}', {"nvidia.com/gpu": 4.0, "cpu": 8.0}),
        ('{"cpu": "500m"}', {"cpu": 0.5}),
    ],
)
def test_resource_budgets_from_the_environment(text: str, expected: dict, monkeypatch) -> None:
    monkeypatch.setenv("SCALER_RESOURCE_BUDGETS", text)
    monkeypatch.setenv("SCALER_MAX_TOTAL_WORKERS", "7")
    settings = ScalerSettings.from_environment()
    assert settings.budget == Budget(max_workers=7, resources=expected)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCALER_RESOURCE_BUDGETS", "[4]", "must be a JSON object"),
        ("SCALER_RESOURCE_BUDGETS", '{"cpu": "lots"}', "cpu: 'lots' is not a Kubernetes quantity"),
        ("SCALER_RESOURCE_BUDGETS", "{", "is not JSON"),
        ("SCALER_MAX_TOTAL_WORKERS", "four", "SCALER_MAX_TOTAL_WORKERS='four' is not a whole number"),
        ("SCALER_BACKOFF_SECONDS", "-1", "must not be negative"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str, message: str, monkeypatch) -> None:
    from scaler.settings import SettingsError

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("(", r"\(")):
        ScalerSettings.from_environment()
