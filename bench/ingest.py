"""Ingest benchmark: HTTP upload -> confirmed messages, against a plain pika publisher.

    ./manage.sh bench ingest            (or .venv/bin/python bench/ingest.py)

Measured in one run on one machine, on a private vhost:

* baseline: one process publishes the same 200,000 JSON rows straight to
  RabbitMQ with pika's asynchronous SelectConnection, publisher confirms and a
  window of 1,000 unconfirmed messages (what a careful hand-written publisher does);
* producer: the same rows as a CSV file uploaded over HTTP to `python -m producer`,
  timed from the first byte sent to the 200 (all rows confirmed);
* the producer's peak RSS (sampled every 10 ms) while it takes a 10,000-row and a
  1,000,000-row upload.

Figures are printed last; throughput is a ratio against the baseline measured in
the same run, because these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pika
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.broker import create_vhost, delete_vhost  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

HEADER = ["Date", "Item Description", "Quantity", "Amount"]


def write_sample(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow(
                [
                    f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
                    f"Item {i % 500}, size {i % 7}",
                    i % 9 + 1,
                    f"{i % 1000}.{i % 100:02d}",
                ]
            )


def json_bodies(path: Path) -> list[bytes]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return [json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False).encode() for row in reader]


def baseline_publish(url: str, queue: str, bodies: list[bytes], window: int = 1000) -> float:
    """Seconds for a plain asynchronous pika publisher with confirms to get every body confirmed."""
    state = {"sent": 0, "confirmed": 0, "started": 0.0, "finished": 0.0}
    channel_box: dict[str, pika.channel.Channel] = {}

    def pump() -> None:
        channel = channel_box["channel"]
        while state["sent"] < len(bodies) and state["sent"] - state["confirmed"] < window:
            state["sent"] += 1
            channel.basic_publish(
                "",
                queue,
                bodies[state["sent"] - 1],
                pika.BasicProperties(delivery_mode=2, content_type="application/json", message_id=str(state["sent"])),
            )

    def on_confirm(frame) -> None:
        method = frame.method
        state["confirmed"] = method.delivery_tag if method.multiple else state["confirmed"] + 1
        if state["confirmed"] >= len(bodies):
            state["finished"] = time.perf_counter()
            connection.close()
            return
        pump()

    def on_channel(channel) -> None:
        channel_box["channel"] = channel

        def start(_frame) -> None:
            state["started"] = time.perf_counter()
            pump()

        channel.queue_declare(
            queue, durable=True, callback=lambda _f: channel.confirm_delivery(on_confirm, callback=start)
        )

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, _reason: c.ioloop.stop(),
    )
    connection.ioloop.start()
    return state["finished"] - state["started"]


class PeakRss:
    """Samples a process's resident memory in the background and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(stack: Stack, path: Path, job_type: str) -> float:
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = httpx.post(
            f"{stack.producer_url}/submit/{job_type}", content=handle, headers={"Content-Type": "text/csv"}, timeout=600
        )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def delete_queue(broker, name: str) -> None:
    httpx.delete(
        f"http://127.0.0.1:15672/api/queues/{quote(broker.vhost, safe='')}/{quote(name, safe='')}",
        auth=("guest", "guest"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each side counts")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows of the large upload for peak RSS")
    args = parser.parse_args()

    broker = create_vhost()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    stack = Stack(broker, work, {"bench": {}})
    try:
        stack.start_producer()
        queue = stack.queue_of("bench")
        sample = work / "sample.csv"
        write_sample(sample, args.rows)
        bodies = json_bodies(sample)
        baseline_times, producer_times = [], []
        for round_number in range(args.rounds):
            baseline_times.append(baseline_publish(broker.amqp_url, f"baseline-{uuid.uuid4().hex[:6]}", bodies))
            delete_queue(broker, queue)
            producer_times.append(upload(stack, sample, "bench"))
            print(
                f"round {round_number + 1}: baseline {args.rows / baseline_times[-1]:,.0f} rows/s, "
                f"producer {args.rows / producer_times[-1]:,.0f} rows/s",
                file=sys.stderr,
            )
        delete_queue(broker, queue)

        small, large = work / "small.csv", work / "large.csv"
        write_sample(small, 10_000)
        write_sample(large, args.large)
        pid = stack.producer.pid
        idle = psutil.Process(pid).memory_info().rss
        with PeakRss(pid) as small_peak:
            upload(stack, small, "bench")
        delete_queue(broker, queue)
        with PeakRss(pid) as large_peak:
            large_seconds = upload(stack, large, "bench")
        delete_queue(broker, queue)
    finally:
        stack.stop()
        delete_vhost(broker)

    baseline_rate = args.rows / min(baseline_times)
    producer_rate = args.rows / min(producer_times)
    mib = 1024 * 1024
    print()
    print(f"ingest benchmark ({args.rows:,} rows, {os.cpu_count()} cores, best of {args.rounds})")
    print(f"  baseline (pika async publisher, confirms, window 1000): {baseline_rate:10,.0f} rows/s")
    print(f"  producer (HTTP upload -> confirmed messages):          {producer_rate:10,.0f} rows/s")
    print(
        f"  producer / baseline:                                   {producer_rate / baseline_rate:10.2f}  (required >= 0.8)"
    )
    print(
        f"  producer RSS idle {idle / mib:.0f} MiB; peak 10,000 rows {small_peak.peak / mib:.0f} MiB; "
        f"peak {args.large:,} rows {large_peak.peak / mib:.0f} MiB ({args.large / large_seconds:,.0f} rows/s)"
    )
    print(
        f"  peak RSS large / small:                                {large_peak.peak / small_peak.peak:10.2f}  (required <= 1.25, and < 200 MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
