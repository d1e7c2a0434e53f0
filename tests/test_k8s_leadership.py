"""Leader election without split brain: every create and delete is checked against this replica's leadership
and the age of the view it acts on, immediately before it is sent.

First step by step on a clock the test moves, then two whole scalers (Scaler + KubernetesBackend +
LeaseElector each, their own control-loop threads) against one emulated API server that is slow, and slower
still for one replica at a time, so the leadership keeps changing hands while both want more workers.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from common.config import JobType
from common.config_watch import ConfigWatcher
from harness.configs import write_config
from harness.k8s_emulator import KubernetesEmulator
from harness.waiting import wait_until
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_api import NotLeading
from scaler.backends.kubernetes_manifests import ClusterSettings
from scaler.leader import LeaseElector
from scaler.loop import Scaler
from tests.support.k8s_fakes import FakeChannel, FakeClock, FakeStats

SLEEP = JobType(name="sleep", queue="q_sleep", image="worker-sleep:1")
TYPE = {"queue": "q_sleep", "image": "worker-sleep:1", "threshold": 5, "burst_size": 3, "max_workers": 4}


def elector(emulator: KubernetesEmulator, identity: str, clock=time.monotonic, duration: float = 15) -> LeaseElector:
    return LeaseElector(
        emulator.client_api(identity), "queue-autoscaler", "scaler", identity, duration=duration, clock=clock
    )


def test_a_write_needs_a_fresh_view_taken_while_leading(emulator: KubernetesEmulator) -> None:
    clock = FakeClock()
    leader = elector(emulator, "replica-a", clock)
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings(), leadership=leader)
    backend.list_workers()
    with pytest.raises(NotLeading, match="not sent: this replica does not lead"):
        backend.start_worker(SLEEP)
    assert leader.try_acquire_or_renew()
    with pytest.raises(NotLeading):
        backend.start_worker(SLEEP)  # its view predates its leadership: it may miss the old leader's last Jobs
    clock.now += 0.1
    backend.list_workers()
    first = backend.start_worker(SLEEP)

    clock.now += leader.tick_deadline  # this tick overran its deadline: it stops acting
    with pytest.raises(NotLeading):
        backend.start_worker(SLEEP)
    backend.terminate(first, SLEEP)  # not sent (logged): the loop carries on, a leader ends it later
    assert emulator.deletes == []
    backend.list_workers()  # the next tick
    second = backend.start_worker(SLEEP)

    clock.now += leader.renew_deadline - leader.tick_deadline  # not renewed within the renew deadline
    backend.list_workers()
    with pytest.raises(NotLeading):
        backend.start_worker(SLEEP)
    assert leader.try_acquire_or_renew()  # leading again (nobody took over), but a new term: list first
    with pytest.raises(NotLeading):
        backend.start_worker(SLEEP)
    clock.now += 0.1
    backend.list_workers()
    backend.terminate(first, SLEEP)
    assert emulator.names("jobs") == [second.worker_id]
    assert emulator.count("POST", "jobs") == 2 and len(emulator.deletes) == 1, "refused writes are never sent"


def test_the_tick_deadline_is_shorter_than_the_renew_deadline(emulator: KubernetesEmulator) -> None:
    assert elector(emulator, "replica-a").tick_deadline == 5.0
    with pytest.raises(ValueError, match="shorter than the renew deadline"):
        LeaseElector(emulator.api_client(), "queue-autoscaler", "scaler", "a", duration=15, tick_deadline=10)


def test_stopping_without_release_keeps_the_lease_and_acts_no_more(emulator: KubernetesEmulator) -> None:
    leader = elector(emulator, "replica-a")
    backend = KubernetesBackend(emulator.api_client(), ClusterSettings(), leadership=leader)
    assert leader.try_acquire_or_renew()
    backend.list_workers()
    assert leader.acting_window(time.monotonic()) > 0
    leader.stop(release=False)  # the control loop did not end in time: the Lease must expire instead
    assert emulator.get("leases", "scaler")["spec"]["holderIdentity"] == "replica-a"
    with pytest.raises(NotLeading):
        backend.start_worker(SLEEP)


class Replica:
    """One whole scaler: its own API client (tagged, so the test can slow it down alone), elector, backend and
    control loop on a thread, all real."""

    def __init__(self, emulator: KubernetesEmulator, identity: str, config: Path) -> None:
        self.identity = identity
        self.elector = LeaseElector(
            emulator.client_api(identity), "queue-autoscaler", "scaler", identity, duration=1.5, retry_period=0.15
        )
        self.backend = KubernetesBackend(
            emulator.client_api(identity), ClusterSettings(), request_timeout=5, leadership=self.elector
        )
        self.stats = FakeStats()
        self.stats.set("q_sleep", 500)
        self.scaler = Scaler(
            ConfigWatcher(config),
            self.backend,
            self.stats,
            FakeChannel(),
            tick_seconds=0.05,
            is_leader=self.elector.is_leader,
        )
        self.created = 0
        start = self.backend.start_worker

        def counted(job_type: JobType):
            worker = start(job_type)
            self.created += 1
            return worker

        self.backend.start_worker = counted  # type: ignore[method-assign] - counts, changes nothing
        self.loop = threading.Thread(target=self.scaler.run, name=f"loop-{identity}", daemon=True)

    def start(self) -> None:
        self.elector.start()
        self.loop.start()

    def stop(self) -> None:
        self.scaler.stop()
        self.loop.join(timeout=30)
        self.elector.stop(release=not self.loop.is_alive())


def churn(emulator: KubernetesEmulator, stop: threading.Event, rng: random.Random) -> None:
    """The cluster's side: pods start running, and now and then a worker finishes (so a leader replaces it)."""
    while not stop.wait(0.2):
        for name in emulator.names("jobs"):
            emulator.set_pod(name, "Running")
        with emulator.lock:
            running = [
                name
                for (_, name), job in emulator.objects["jobs"].items()
                if not job.get("status", {}).get("conditions")
            ]
        if running and rng.random() < 0.5:
            try:
                emulator.finish_job(rng.choice(running))
            except KeyError:
                pass  # removed meanwhile


def holder(emulator: KubernetesEmulator) -> str | None:
    try:
        return emulator.get("leases", "scaler")["spec"].get("holderIdentity")
    except KeyError:
        return None


def stall_the_leader(emulator: KubernetesEmulator, replicas: list[Replica], stall: float) -> None:
    """The leader's link slows down while one of its creates is in flight: it loses the Lease with that create
    on its way, and the other replica takes over and fills the gap. Returns once the stalled create has ended
    (sent too late and dropped, or landed) and the new leader has created a Job."""
    leader, resolved = holder(emulator), emulator.stalls_resolved
    emulator.stall_on_create[leader] = stall
    wait_until(lambda: holder(emulator) not in (leader, None), timeout=20, what="a takeover")
    new_leader = next(replica for replica in replicas if replica.identity == holder(emulator))
    created = new_leader.created
    wait_until(lambda: emulator.stalls_resolved > resolved, timeout=20, what="the stalled create to end")
    wait_until(lambda: new_leader.created > created, timeout=20, what="the new leader to create")
    emulator.client_latency = {}


def test_two_scalers_on_a_slow_api_never_exceed_max_workers_while_leadership_flips(
    emulator: KubernetesEmulator, tmp_path: Path
) -> None:
    rng = random.Random(12)
    config = write_config(tmp_path, {"sleep": TYPE}, unique_queues=False)
    emulator.latency = 0.02
    replicas = [Replica(emulator, identity, config) for identity in ("replica-a", "replica-b")]
    stop = threading.Event()
    cluster = threading.Thread(target=churn, args=(emulator, stop, rng), daemon=True)
    for replica in replicas:
        replica.start()
    cluster.start()
    try:
        wait_until(lambda: any(r.created for r in replicas), timeout=15, what="a first leader to create Jobs")
        for stall in (1.6, 2.5, 4.0, 2.5):
            stall_the_leader(emulator, replicas, stall)
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()
    assert all(replica.created > 0 for replica in replicas), [r.created for r in replicas]
    assert emulator.peak_live_jobs <= TYPE["max_workers"], f"{emulator.peak_live_jobs} unfinished Jobs at once"
