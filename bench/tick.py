"""Tick-cost benchmark: one scaler tick with 200 job types configured.

    ./manage.sh bench tick              (or .venv/bin/python bench/tick.py)

Runs the real control loop (management API, local backend, heartbeat channel)
in this process against a private vhost whose 200 types have their 600 queues
declared, and counts per tick the HTTP requests sent to the broker's
management API (an httpx request hook on the scaler's own client, so every
request is counted, retries included), the calls to the backend, and the CPU
time. The baseline, measured in the same run against the same API, is a
per-queue poller shaped like KEDA's RabbitMQ scaler in HTTP mode: one
ScaledObject per job type, each asking `GET /api/queues/<vhost>/<queue>` for
its work queue every poll; its requests are counted by the same hook.
Results go to bench/results/tick.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.results import Row, write_results  # noqa: E402
from common.config import load_config  # noqa: E402
from common.config_watch import ConfigWatcher  # noqa: E402
from common.queues import declare_queues  # noqa: E402
from harness.broker import create_vhost, delete_vhost  # noqa: E402
from harness.configs import write_config  # noqa: E402
from scaler.backends.local import LocalBackend  # noqa: E402
from scaler.loop import Scaler  # noqa: E402
from scaler.queue_stats import QueueStatsSource  # noqa: E402
from scaler.worker_channel import WorkerChannel  # noqa: E402


class RequestCounter:
    """An httpx request hook: counts the requests a client really sends."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: httpx.Request) -> None:
        self.count += 1


class PerQueuePoller:
    """What a per-queue scaler does each poll: one management API request per scaled queue (KEDA's HTTP mode)."""

    def __init__(self, api_url: str, vhost: str, queues: list[str], counter: RequestCounter) -> None:
        self.urls = [f"{api_url}/queues/{quote(vhost, safe='')}/{quote(name, safe='')}" for name in queues]
        self.client = httpx.Client(auth=("guest", "guest"), timeout=10, event_hooks={"request": [counter]})

    def poll(self) -> dict[str, int]:
        """Every scaled queue's ready + unacked messages, the figure KEDA's RabbitMQ scaler scales on."""
        depths = {}
        for url in self.urls:
            queue = self.client.get(url).raise_for_status().json()
            depths[queue["name"]] = int(queue.get("messages_ready", 0)) + int(queue.get("messages_unacknowledged", 0))
        return depths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-tick-"))
    try:
        path = write_config(
            directory, {f"type-{i:03d}": {"handler": "sleep", "max_workers": 0} for i in range(args.types)}
        )
        config = load_config(path)
        with pika.BlockingConnection(pika.URLParameters(broker.amqp_url)) as connection:
            channel = connection.channel()
            for job_type in config.job_types.values():
                declare_queues(channel, job_type)

        stats = QueueStatsSource((broker.api_url,), broker.amqp_url)
        scaler_requests = RequestCounter()
        stats.client.event_hooks["request"].append(scaler_requests)
        backend = LocalBackend(directory / "state")
        channel = WorkerChannel((broker.amqp_url,)).start()
        scaler = Scaler(ConfigWatcher(path), backend, stats, channel, tick_seconds=1.0)
        scaler.tick()  # warm up: first reads, imports, metric label creation
        scaler_requests.count = backend.calls = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.ticks):
            scaler.tick()
        tick_cpu = (time.process_time() - cpu) / args.ticks
        tick_wall = (time.perf_counter() - wall) / args.ticks
        broker_calls, backend_calls = scaler_requests.count / args.ticks, backend.calls / args.ticks
        channel.close()

        queues = [job.queue for job in config.job_types.values()]
        poller_requests = RequestCounter()
        poller = PerQueuePoller(broker.api_url.rstrip("/"), broker.vhost, queues, poller_requests)
        poller.poll()  # warm up, as the scaler's first tick
        poller_requests.count = 0
        cpu, wall = time.process_time(), time.perf_counter()
        polls = max(args.ticks // 5, 2)
        for _ in range(polls):
            if len(poller.poll()) != len(queues):
                raise RuntimeError("the per-queue poller did not read every queue")
        base_calls = poller_requests.count / polls
        base_cpu = (time.process_time() - cpu) / polls
        base_wall = (time.perf_counter() - wall) / polls
    finally:
        delete_vhost(broker)

    print()
    print(f"tick benchmark ({args.types} job types, {args.types * 3} queues, {args.ticks} ticks)")
    print(
        f"  scaler tick: {broker_calls:.0f} management API request, {backend_calls:.0f} backend call, "
        f"{tick_cpu * 1000:.1f} ms CPU, {tick_wall * 1000:.1f} ms wall"
    )
    print(
        f"  per-queue poller (one GET per work queue, as KEDA's RabbitMQ scaler): {base_calls:.0f} requests, "
        f"{base_cpu * 1000:.1f} ms CPU, {base_wall * 1000:.1f} ms wall"
    )
    print(
        f"  poller / scaler: {base_calls / broker_calls:.0f}x the requests, {base_cpu / tick_cpu:.1f}x the CPU, "
        f"{base_wall / tick_wall:.1f}x the wall time (the scaler's tick includes deciding and the status document)"
    )
    row = Row(
        f"`./manage.sh bench tick`: one tick with {args.types} job types ({args.types * 3} queues), requests counted",
        f"**{broker_calls:.0f}** management API request + **{backend_calls:.0f}** backend call, "
        f"{tick_cpu * 1000:.1f} ms CPU, {tick_wall * 1000:.0f} ms wall",
        f"a per-queue poller (KEDA's RabbitMQ scaler in HTTP mode, one GET per work queue): "
        f"{base_calls:.0f} requests, {base_wall * 1000:.0f} ms wall",
        f"**{base_calls / broker_calls:.0f}x** fewer requests",
    )
    figures = {
        "scaler": {"requests": broker_calls, "backend_calls": backend_calls, "cpu_s": tick_cpu, "wall_s": tick_wall},
        "per_queue_poller": {"requests": base_calls, "cpu_s": base_cpu, "wall_s": base_wall},
    }
    write_results("tick", [row], figures, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
