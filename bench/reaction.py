"""Reaction benchmark: how fast work starts on an idle job type, and how fast workers go after a backlog.

    ./manage.sh bench reaction          (or .venv/bin/python bench/reaction.py [--rows 200] [--trials 5])

Four measurements, all in one run on this machine, each against its baseline:

1. Worker start: from the backend's start call to the worker consuming, a
   worker forked from its type's warm template against a new interpreter
   (`python -m workers <type>`, the plain spawn), alternated.
2. Upload -> first row handled, on the local backend, for an idle type with no
   worker running (median of `--trials`, after one warm-up upload that starts
   the type's template): the scaler as shipped (1 s tick, wake-ups from the
   producer, forked workers) against the prototype's 5 s
   poll (a scaler that ignores wake-ups, ticks every 5 s and spawns plain
   workers), alternated trial by trial on two stacks of their own; and a model
   of a 30 s poll (KEDA's default): the baseline's own time from the scaling
   decision to the first row, plus the median wait for a 30 s poll (15 s).
3. Drain: from the last ack to the last worker gone, which should be at most
   `idle_seconds` + 1 s.
4. Kubernetes: upload -> worker Job created, against the emulated API server
   (harness/k8s_emulator.py), a scaler woken by the upload against the
   same scaler on its 5 s poll. This times only the Job's creation in the
   emulator: no pod is scheduled, no image pulled, no container started.

The 30 s figure is a MODEL, not a measurement, and is printed and written as
one. Workers are the `sleep` type at 50 ms a row. Ratios are printed last;
results go to bench/results/reaction.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.results import Row, write_results  # noqa: E402
from common.config import JobType, parse_config  # noqa: E402
from common.config_watch import ConfigWatcher  # noqa: E402
from common.queues import declare_queues  # noqa: E402
from harness.broker import Broker, create_vhost, delete_vhost  # noqa: E402
from harness.k8s_emulator import KubernetesEmulator  # noqa: E402
from harness.stack import Stack, kill_workers_in  # noqa: E402
from harness.waiting import wait_until  # noqa: E402
from scaler.backends.kubernetes import KubernetesBackend  # noqa: E402
from scaler.backends.kubernetes_manifests import ClusterSettings  # noqa: E402
from scaler.backends.local import LocalBackend  # noqa: E402
from scaler.backends.local_settings import LocalSettings  # noqa: E402
from scaler.loop import Scaler  # noqa: E402
from scaler.queue_stats import QueueStatsSource  # noqa: E402
from scaler.worker_channel import WorkerChannel  # noqa: E402

IDLE_SECONDS = 3
SLEEP = {"handler": "sleep", "threshold": 5, "max_workers": 4, "idle_seconds": IDLE_SECONDS, "env": {"SLEEP_MS": "50"}}
KEDA_POLL_SECONDS = 30.0
BASELINE_POLL_SECONDS = 5.0


def csv_rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


def log_events(logs: Path, name: str, since: float = 0.0) -> list[dict]:
    """Every JSON log event called `name` in the worker logs under `logs` at or after `since`."""
    found = []
    for log in logs.glob("*.log"):
        if log.stat().st_mtime < since:
            continue
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"event": "{name}"' in line:
                event = json.loads(line)
                if event["ts"] >= since:
                    found.append(event)
    return found


def at_phase(last_tick: Callable[[], float], interval: float, fraction: float) -> None:
    """Return `fraction` of a poll interval after a tick, so a poller's trials wait 1/2n, 3/2n, ... of its interval
    (median: half of it) instead of whatever phase the previous trial happened to end at."""
    seen = last_tick()
    wait_until(lambda: last_tick() != seen, timeout=interval * 3, interval=0.005, what="a fresh tick")
    time.sleep(max(last_tick() + fraction * interval - time.time(), 0))


# 1. worker start -------------------------------------------------------------------------------
def start_seconds(backend: LocalBackend, job_type: JobType) -> float:
    """Seconds from `start_worker` to the worker's "consuming" line; the worker is then stopped."""
    began = time.time()
    worker = backend.start_worker(job_type)
    log = backend.logs.path_for(worker.worker_id)
    consuming = wait_until(
        lambda: log_events(log.parent, "consuming", began), timeout=30, interval=0.002, what="consuming"
    )
    backend.terminate(worker, job_type)
    wait_until(lambda: not [w for w in backend.list_workers() if not w.state.finished], timeout=30, what="stopped")
    return consuming[0]["ts"] - began


def measure_worker_start(broker: Broker, trials: int) -> tuple[list[float], list[float]]:
    job_type = parse_config({"sleep": {**SLEEP, "queue": "bench_start"}}).get("sleep")
    directory = Path(tempfile.mkdtemp(prefix="bench-start-"))
    forked = LocalBackend(directory / "forked", LocalSettings(), configured=lambda: [job_type])
    spawned = LocalBackend(directory / "spawned", LocalSettings(templates=False))
    try:
        start_seconds(forked, job_type)  # the first start spawns the plain way and starts the template
        wait_until(lambda: forked.list_workers() is not None and forked.templates.templates["sleep"].ready, timeout=30)
        fork_times, spawn_times = [], []
        for _ in range(trials):
            fork_times.append(start_seconds(forked, job_type))
            spawn_times.append(start_seconds(spawned, job_type))
        return fork_times, spawn_times
    finally:
        forked.close()
        kill_workers_in(directory)


# 2 and 3. the local stack ---------------------------------------------------------------------------
@dataclass
class Trial:
    first_row: float  # upload's 200 -> first row handled
    decision: float  # upload's 200 -> the scaler's scale-up decision
    drain: float  # last ack -> last worker gone


def local_trial(stack: Stack, rows: int, phase: float | None = None) -> Trial:
    """One upload to the idle type; `phase`: upload at that fraction of the poll interval after a tick."""
    logs = stack.state_dir / "logs"
    if phase is not None:
        at_phase(lambda: stack.status()["tick"]["last_at"], BASELINE_POLL_SECONDS, phase)
    began = time.time()
    response = stack.upload(csv_rows(rows), "sleep")
    answered = time.time()
    response.raise_for_status()
    upload_id = response.json()["upload_id"]
    wait_until(
        lambda: len([e for e in log_events(logs, "processed", began) if e["message_id"].startswith(upload_id)]) >= rows,
        timeout=300,
        interval=0.05,
        what="every row processed",
    )
    processed = [e["ts"] for e in log_events(logs, "processed", began) if e["message_id"].startswith(upload_id)]
    stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=120, what="every worker gone")
    wait_until(lambda: not stack.live_worker_pids(), timeout=30, what="every worker process gone")
    gone = max(e["ts"] for e in log_events(logs, "worker stopped", began))
    decided = min(e["ts"] for e in stack.status()["events"] if e["ts"] >= began and e["direction"] in ("up", "burst"))
    return Trial(min(processed) - answered, decided - answered, gone - max(processed))


def local_stack(broker: Broker, tick: float, shipped: bool) -> Stack:
    env = {} if shipped else {"SCALER_WAKE_UPS": "false", "SCALER_WORKER_TEMPLATES": "false"}
    stack = Stack(broker, Path(tempfile.mkdtemp(prefix="bench-reaction-")), {"sleep": SLEEP}, tick, env)
    stack.start()
    return stack


def measure_local(broker: Broker, other: Broker, rows: int, trials: int) -> tuple[list[Trial], list[Trial], Trial]:
    """(shipped trials, baseline trials, the shipped stack's first upload, before its template ran)."""
    shipped = local_stack(broker, 1.0, shipped=True)
    baseline = local_stack(other, BASELINE_POLL_SECONDS, shipped=False)
    try:
        first_ever = local_trial(shipped, rows)  # a warm-up each: imports are cached, the template starts
        local_trial(baseline, rows)
        wait_until(lambda: "worker template for sleep ready" in shipped.scaler.log(), timeout=30, what="the template")
        results: tuple[list[Trial], list[Trial], Trial] = ([], [], first_ever)
        for number in range(trials):
            results[0].append(local_trial(shipped, rows))
            results[1].append(local_trial(baseline, rows, phase=(number + 0.5) / trials))
        return results
    finally:
        shipped.stop()
        baseline.stop()


# 4. Kubernetes: upload -> Job created ---------------------------------------------------------------
@dataclass
class KubernetesScaler:
    """A scaler with the Kubernetes backend that acts only while `measuring` is set (it is the leader then)."""

    scaler: Scaler
    channel: WorkerChannel
    measuring: threading.Event


def kubernetes_scaler(emulator: KubernetesEmulator, broker: Broker, config: Path, woken: bool) -> KubernetesScaler:
    """`woken`: ticks every second and on wake-ups; otherwise on a 5 s poll only."""
    measuring = threading.Event()
    channel = WorkerChannel((broker.amqp_url,))
    scaler = Scaler(
        ConfigWatcher(config),
        KubernetesBackend(emulator.api_client(), ClusterSettings()),
        QueueStatsSource((broker.api_url,), broker.amqp_url),
        channel,
        tick_seconds=1.0 if woken else BASELINE_POLL_SECONDS,
        is_leader=measuring.is_set,
    )
    if woken:
        channel.on_wake = scaler.wake
    channel.start()
    threading.Thread(target=scaler.run, daemon=True).start()
    return KubernetesScaler(scaler, channel, measuring)


def job_created_seconds(
    stack: Stack, emulator: KubernetesEmulator, measured: KubernetesScaler, rows: int, phase: float
) -> float:
    """Seconds from the upload's 200 to the first worker Job; the tick that created it is awaited after that."""
    for name in emulator.names("jobs"):
        emulator.handle("DELETE", f"/apis/batch/v1/namespaces/queue-autoscaler/jobs/{name}", None)
    with stack.broker.channel() as channel:
        declare_queues(channel, parse_config(stack.config()).get("sleep"))
        channel.queue_purge(stack.queue_of("sleep"))
    at_phase(lambda: measured.scaler.last_at, measured.scaler.tick_seconds, phase)
    measured.measuring.set()
    try:
        response = stack.upload(csv_rows(rows), "sleep")
        answered = time.perf_counter()
        response.raise_for_status()
        wait_until(lambda: emulator.names("jobs"), timeout=60, interval=0.002, what="a worker Job")
        created = time.perf_counter() - answered
        ticks = measured.scaler.board.tick_number
        wait_until(lambda: measured.scaler.board.tick_number > ticks, timeout=30, what="the creating tick to end")
        return created
    finally:
        measured.measuring.clear()


def measure_kubernetes(broker: Broker, rows: int, trials: int) -> tuple[list[float], list[float]]:
    # No scale-down here (the emulator's pods never run): a long idle_seconds keeps the poll to its interval.
    stack = Stack(broker, Path(tempfile.mkdtemp(prefix="bench-k8s-")), {"sleep": {**SLEEP, "idle_seconds": 600}})
    stack.start_producer()
    emulator = KubernetesEmulator()
    woken, polled = (kubernetes_scaler(emulator, broker, stack.config_path, flag) for flag in (True, False))
    try:
        times: tuple[list[float], list[float]] = ([], [])
        for number in range(trials):
            phase = (number + 0.5) / trials
            times[0].append(job_created_seconds(stack, emulator, woken, rows, phase))
            times[1].append(job_created_seconds(stack, emulator, polled, rows, phase))
        return times
    finally:
        for measured in (woken, polled):
            measured.scaler.stop()
            measured.channel.close()
        emulator.close()
        stack.stop()


# the report -----------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    brokers = [create_vhost() for _ in range(3)]
    try:
        fork_times, spawn_times = measure_worker_start(brokers[0], args.trials)
        shipped, baseline, first_ever = measure_local(brokers[0], brokers[1], args.rows, args.trials)
        k8s_woken, k8s_polled = measure_kubernetes(brokers[2], args.rows, args.trials)
    finally:
        for broker in brokers:
            delete_vhost(broker)
    report(args, (fork_times, spawn_times), shipped, baseline, first_ever, (k8s_woken, k8s_polled))
    return 0


def report(
    args: argparse.Namespace,
    starts: tuple[list[float], list[float]],
    shipped: list[Trial],
    baseline: list[Trial],
    first_ever: Trial,
    kubernetes: tuple[list[float], list[float]],
) -> None:
    fork, spawn = median(starts[0]), median(starts[1])
    first, first_baseline = median([t.first_row for t in shipped]), median([t.first_row for t in baseline])
    keda = KEDA_POLL_SECONDS / 2 + median([t.first_row - t.decision for t in baseline])
    drain, drain_baseline = median([t.drain for t in shipped]), median([t.drain for t in baseline])
    woken, polled = median(kubernetes[0]), median(kubernetes[1])
    lines = [
        f"reaction benchmark: {args.rows} rows of 50 ms, idle_seconds {IDLE_SECONDS}, median of {args.trials}",
        f"  worker start -> consuming: forked {fork:.3f} s, new interpreter {spawn:.3f} s",
        "  upload -> first row handled:",
        f"    shipped (1 s tick, wake-up, forked worker): {first:.3f} s {_all(shipped, 'first_row')}",
        f"    shipped, first upload after the scaler started (template not running yet): {first_ever.first_row:.3f} s",
        f"    baseline, 5 s poll, new interpreter:        {first_baseline:.3f} s {_all(baseline, 'first_row')}",
        f"    MODEL (not measured), 30 s poll: 15 s + the baseline's decision -> first row: {keda:.3f} s",
        "  last ack -> last worker gone:",
        f"    shipped: {drain:.2f} s = idle_seconds {IDLE_SECONDS} + {drain - IDLE_SECONDS:.2f} s {_all(shipped, 'drain')}",
        f"    baseline, 5 s poll: {drain_baseline:.2f} s",
        f"  kubernetes upload -> Job created in the emulated API server (Job creation only, no pod started):"
        f" woken {woken:.3f} s, 5 s poll {polled:.3f} s",
        "",
        f"  worker start: forked {spawn / fork:.1f}x faster than a new interpreter",
        f"  first row: {first_baseline / first:.1f}x faster than the 5 s poll, {keda / first:.0f}x than a 30 s poll (model)",
        f"  drain: last worker gone idle_seconds {drain - IDLE_SECONDS:+.2f} s after the last ack (target <= +1 s)",
        f"  kubernetes Job created: {polled / woken:.0f}x faster than the 5 s poll",
    ]
    print("\n" + "\n".join(lines))
    rows = [
        Row(
            f"`./manage.sh bench reaction`: upload's 200 -> first row handled, idle type, no worker (median of {args.trials})",
            f"**{first:.3f} s**",
            f"5 s poll, measured: {first_baseline:.2f} s; 30 s poll (KEDA's default), **model** "
            f"(15 s + the measured decision -> first row): {keda:.1f} s",
            f"**{first_baseline / first:.0f}x**; against the model **{keda / first:.0f}x**",
        ),
        Row(
            "same: the first upload after the scaler started (its type's template not running yet)",
            f"{first_ever.first_row:.2f} s",
            "",
            "one new interpreter; later workers are forked",
        ),
        Row(
            "same: worker start to consuming",
            f"forked from the type's template: {fork:.3f} s",
            f"new interpreter: {spawn:.3f} s",
            f"**{spawn / fork:.1f}x**",
        ),
        Row(
            f"same: last ack -> last worker gone (`idle_seconds` {IDLE_SECONDS})",
            f"`idle_seconds` + **{drain - IDLE_SECONDS:.2f} s**",
            f"5 s poll: {drain_baseline:.2f} s",
        ),
        Row(
            "same: Kubernetes upload -> Job created, in the emulated API server (times Job creation only: "
            "no pod scheduled or started)",
            f"**{woken:.3f} s**",
            f"5 s poll: {polled:.2f} s",
            f"**{polled / woken:.0f}x**",
        ),
    ]
    figures = {
        "first_row_s": {"shipped": first, "poll_5s": first_baseline, "model_poll_30s": keda},
        "first_upload_after_start_s": first_ever.first_row,
        "worker_start_s": {"forked": fork, "new_interpreter": spawn},
        "drain_s": {"shipped": drain, "poll_5s": drain_baseline, "idle_seconds": IDLE_SECONDS},
        "kubernetes_job_created_s": {"woken": woken, "poll_5s": polled},
    }
    write_results("reaction", rows, figures, settings=vars(args))


def _all(trials: list[Trial], field: str) -> str:
    return "[" + ", ".join(f"{getattr(t, field):.2f}" for t in trials) + "]"


if __name__ == "__main__":
    sys.exit(main())
