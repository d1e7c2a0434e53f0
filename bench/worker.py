"""Worker throughput benchmark: the runtime with a no-op handler against a plain pika consumer.

    ./manage.sh bench worker            (or .venv/bin/python bench/worker.py)

Both consume the same number of persistent messages from their own queue on a
private vhost with the same prefetch, acking each one. The baseline is the
simplest correct consumer pika allows (basic_consume, ack in the callback); the
worker is `python -m workers` with the `tests.handlers.noop` handler, running
its full machinery (handler thread, heartbeats, stop listener). Figures are
printed last as a ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobtypes.config import JobType  # noqa: E402
from jobtypes.queues import declare_queues  # noqa: E402
from tests.support.broker import create_vhost, delete_vhost  # noqa: E402
from tests.support.configs import write_config  # noqa: E402
from tests.support.processes import Service  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

BODY = b'{"Date":"2024-01-01","Item Description":"Tea","Quantity":"1","Amount":"2.50"}'


def fill(url: str, job_type: JobType, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    declare_queues(channel, job_type)
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for _ in range(count):
        channel.basic_publish("", job_type.queue, BODY, properties)
    channel.queue_declare(job_type.queue, passive=True)  # a round trip: everything above has arrived
    connection.close()


def baseline(url: str, queue: str, count: int, prefetch: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    seen = 0
    started = time.perf_counter()

    def on_message(channel, method, properties, body) -> None:
        nonlocal seen
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= count:
            channel.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def worker_run(broker, directory: Path, job_type: JobType, count: int) -> tuple[float, float]:
    """(seconds including process start, seconds from consuming to the last row processed)."""
    config = write_config(
        directory,
        {job_type.name: {"queue": job_type.queue, "handler": "tests.handlers.noop", "prefetch": job_type.prefetch}},
        unique_queues=False,
    )
    worker = Service("workers", [job_type.name], {**broker.env(), "JOBS_CONFIG": str(config)}, directory / "worker.log")
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    channel = connection.channel()
    try:
        started = time.perf_counter()
        wait_until(
            lambda: channel.queue_declare(job_type.queue, passive=True).method.message_count == 0,
            timeout=600,
            interval=0.01,
            what="the worker to take every message",
        )
        wait_until(
            lambda: worker.log().count('"processed"') >= count,
            timeout=60,
            interval=0.01,
            what="the worker to process every message",
        )
        total = time.perf_counter() - started
        events = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        consuming = next(event["ts"] for event in events if event["event"] == "consuming")
        last = max(event["ts"] for event in events if event["event"] == "processed")
        return total, last - consuming
    finally:
        connection.close()
        worker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=20)
    args = parser.parse_args()
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    try:
        plain = JobType(name="plain", queue="bench_plain", prefetch=args.prefetch)
        runtime = JobType(name="runtime", queue="bench_runtime", prefetch=args.prefetch)
        fill(broker.amqp_url, plain, args.messages)
        fill(broker.amqp_url, runtime, args.messages)
        baseline_seconds = baseline(broker.amqp_url, plain.queue, args.messages, args.prefetch)
        total_seconds, worker_seconds = worker_run(broker, directory, runtime, args.messages)
    finally:
        delete_vhost(broker)
    base_rate, worker_rate = args.messages / baseline_seconds, args.messages / worker_seconds
    print()
    print(f"worker benchmark ({args.messages:,} messages, prefetch {args.prefetch}, no-op handler)")
    print(f"  baseline (plain pika consumer, ack per message): {base_rate:9,.0f} msg/s")
    print(
        f"  worker runtime (python -m workers, once consuming):  {worker_rate:9,.0f} msg/s"
        f"  ({args.messages / total_seconds:,.0f} msg/s counting its {total_seconds - worker_seconds:.1f} s start)"
    )
    print(f"  worker / baseline: {worker_rate / base_rate:.2f}  (aim >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
