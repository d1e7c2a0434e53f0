"""Tick-cost benchmark: one scaler tick with 200 job types configured.

    ./manage.sh bench tick              (or .venv/bin/python bench/tick.py)

Runs the real control loop (management API, local backend, heartbeat channel)
in this process against a private vhost whose 200 types have their 600 queues
declared, and counts per tick the calls made to the broker's management API
and to the backend, and the CPU time. The baseline, measured in the same run,
is what a per-queue scaler (KEDA's RabbitMQ scaler, or a cron of
`rabbitmqctl`/curl calls) does: one management API request per queue.
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

from jobtypes.config import load_config  # noqa: E402
from jobtypes.config_watch import ConfigWatcher  # noqa: E402
from jobtypes.queues import declare_queues  # noqa: E402
from scaler.backends.local import LocalBackend  # noqa: E402
from scaler.loop import Scaler  # noqa: E402
from scaler.queue_stats import QueueStatsSource  # noqa: E402
from scaler.worker_channel import WorkerChannel  # noqa: E402
from tests.support.broker import create_vhost, delete_vhost  # noqa: E402
from tests.support.configs import write_config  # noqa: E402


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

        stats = QueueStatsSource(broker.api_url, broker.amqp_url)
        backend = LocalBackend(directory / "state")
        channel = WorkerChannel(broker.amqp_url).start()
        scaler = Scaler(ConfigWatcher(path), backend, stats, channel, tick_seconds=1.0)
        scaler.tick()  # warm up: first reads, imports, metric label creation
        stats.calls = backend.calls = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.ticks):
            scaler.tick()
        tick_cpu = (time.process_time() - cpu) / args.ticks
        tick_wall = (time.perf_counter() - wall) / args.ticks
        broker_calls, backend_calls = stats.calls / args.ticks, backend.calls / args.ticks
        channel.close()

        # Baseline: one management API request per queue, as per-queue scalers do.
        queues = [name for job in config.job_types.values() for name in (job.queue, job.retry_queue, job.dead_queue)]
        base = f"http://127.0.0.1:15672/api/queues/{quote(broker.vhost, safe='')}/"
        with httpx.Client(auth=("guest", "guest"), timeout=10) as client:
            client.get(base + quote(queues[0], safe=""))
            cpu, wall = time.process_time(), time.perf_counter()
            rounds = max(args.ticks // 5, 2)
            for _ in range(rounds):
                for name in queues:
                    client.get(base + quote(name, safe="")).raise_for_status()
            base_cpu = (time.process_time() - cpu) / rounds
            base_wall = (time.perf_counter() - wall) / rounds
    finally:
        delete_vhost(broker)

    print()
    print(f"tick benchmark ({args.types} job types, {args.types * 3} queues, {args.ticks} ticks)")
    print(
        f"  scaler tick: {broker_calls:.0f} management API call, {backend_calls:.0f} backend call, "
        f"{tick_cpu * 1000:.1f} ms CPU, {tick_wall * 1000:.1f} ms wall"
    )
    print(
        f"  baseline (one API request per queue): {len(queues)} calls, {base_cpu * 1000:.1f} ms CPU, {base_wall * 1000:.1f} ms wall"
    )
    print(
        f"  baseline / scaler: {len(queues) / broker_calls:.0f}x the calls, {base_cpu / tick_cpu:.1f}x the CPU, "
        f"{base_wall / tick_wall:.1f}x the wall time (the scaler's tick includes deciding and the status document)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
