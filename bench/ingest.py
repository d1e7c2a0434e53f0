"""Ingest benchmark: HTTP upload -> confirmed messages, against a plain pika publisher.

    ./manage.sh bench ingest            (or .venv/bin/python bench/ingest.py)

Measured in one run on one machine, on a private vhost, the contenders
alternating (who goes first swaps every round), best of `--rounds` each:

* baseline: one process publishes the same 200,000 JSON rows straight to
  RabbitMQ with pika's asynchronous SelectConnection, publisher confirms and the
  producer's window of unconfirmed messages (what a careful hand-written
  publisher does), with the producer's message properties (persistent, JSON,
  `<upload_id>:<row>` ids, the upload id header, type, timestamp, app id) and
  `mandatory`, to the same queue with the same arguments;
* producer: the same rows as a CSV file uploaded over HTTP to `python -m producer`,
  timed from the first byte sent to the 200 (all rows confirmed): receiving,
  checking the whole file, converting and publishing;
* for reference, the baseline with fewer properties (persistent, JSON, a
  message id: smaller messages than the producer sends, so not a like-for-like
  contender) is printed too;
* the producer's peak RSS (sampled every 10 ms) while it takes a 10,000-row and a
  1,000,000-row upload.

Every contender starts on an empty queue: the queue is deleted before and after
each one. Figures are printed last; throughput is a ratio against the baseline
measured in the same run, because these machines are shared and noisy.
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
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pika
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.results import Row, write_results  # noqa: E402
from common.config import load_config  # noqa: E402
from common.queues import queue_arguments  # noqa: E402
from harness.broker import broker_is_up, create_vhost, delete_vhost  # noqa: E402
from harness.stack import Stack  # noqa: E402
from harness.waiting import wait_until  # noqa: E402

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


def same_properties(job_type: str, upload_id: str, timestamp: int) -> Callable[[int], pika.BasicProperties]:
    """Row number -> the properties the producer gives that row, built per message as pika's users do."""

    def properties(row: int) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            headers={"upload_id": upload_id},
            message_id=f"{upload_id}:{row}",
            timestamp=timestamp,
            type=job_type,
            app_id="queue-autoscaler-producer",
        )

    return properties


def minimal_properties(row: int) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, content_type="application/json", message_id=str(row))


def baseline_publish(
    url: str,
    queue: str,
    arguments: dict,
    bodies: list[bytes],
    window: int,
    properties: Callable[[int], pika.BasicProperties],
    mandatory: bool,
) -> float:
    """Seconds for a plain asynchronous pika publisher with confirms to get every body confirmed."""
    state = {"sent": 0, "confirmed": 0, "started": 0.0, "finished": 0.0}
    channel_box: dict[str, pika.channel.Channel] = {}

    def pump() -> None:
        channel = channel_box["channel"]
        while state["sent"] < len(bodies) and state["sent"] - state["confirmed"] < window:
            state["sent"] += 1
            channel.basic_publish("", queue, bodies[state["sent"] - 1], properties(state["sent"]), mandatory=mandatory)

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
            queue,
            durable=True,
            arguments=arguments,
            callback=lambda _f: channel.confirm_delivery(on_confirm, callback=start),
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
        response = stack.post(
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
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side counts")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows of the large upload for peak RSS")
    parser.add_argument("--window", type=int, default=2000, help="unconfirmed messages in flight, for both sides")
    args = parser.parse_args()

    broker = create_vhost()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    stack = Stack(broker, work, {"bench": {}}, env={"PRODUCER_PUBLISH_WINDOW": str(args.window)})
    try:
        stack.start_producer()
        job_type = load_config(stack.config_path).job_types["bench"]
        queue, arguments = job_type.queue, queue_arguments(job_type)[job_type.queue]
        sample = work / "sample.csv"
        write_sample(sample, args.rows)
        bodies = json_bodies(sample)

        def baseline(properties: Callable[[int], pika.BasicProperties], mandatory: bool) -> float:
            return baseline_publish(broker.amqp_url, queue, arguments, bodies, args.window, properties, mandatory)

        contenders: dict[str, Callable[[], float]] = {
            "baseline": lambda: baseline(same_properties("bench", uuid.uuid4().hex, int(time.time())), True),
            "producer": lambda: upload(stack, sample, "bench"),
            "minimal": lambda: baseline(minimal_properties, False),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for round_number in range(args.rounds):
            order = list(contenders) if round_number % 2 == 0 else list(reversed(contenders))
            for name in order:
                delete_queue(broker, queue)
                times[name].append(contenders[name]())
            delete_queue(broker, queue)
            rates = ", ".join(f"{name} {args.rows / times[name][-1]:,.0f}" for name in contenders)
            print(f"round {round_number + 1}: {rates} rows/s", file=sys.stderr)

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
        # The broker is shared: if someone restarted it meanwhile, wait for it rather than leave the rows behind.
        wait_until(broker_is_up, timeout=120, what="RabbitMQ to answer, to delete the benchmark's vhost")
        delete_vhost(broker)

    rate = {name: args.rows / min(runs) for name, runs in times.items()}
    mib = 1024 * 1024
    print()
    print(f"ingest benchmark ({args.rows:,} rows, {os.cpu_count()} cores, best of {args.rounds}, window {args.window})")
    print(f"  reference: pika publisher, fewer properties, not mandatory: {rate['minimal']:10,.0f} rows/s")
    print(f"  producer / reference:                                     {rate['producer'] / rate['minimal']:10.2f}")
    print(
        f"  producer RSS idle {idle / mib:.0f} MiB; peak 10,000 rows {small_peak.peak / mib:.0f} MiB; "
        f"peak {args.large:,} rows {large_peak.peak / mib:.0f} MiB ({args.large / large_seconds:,.0f} rows/s)"
    )
    print(
        f"  peak RSS large / small:                                   {large_peak.peak / small_peak.peak:10.2f}"
        "  (required <= 1.25, and < 200 MiB)"
    )
    print(f"  baseline (pika async publisher, confirms, same messages): {rate['baseline']:10,.0f} rows/s")
    print(f"  producer (HTTP upload -> confirmed messages):             {rate['producer']:10,.0f} rows/s")
    print(
        f"  producer / baseline:                                      {rate['producer'] / rate['baseline']:10.2f}"
        "  (required >= 1.0)"
    )
    rows = [
        Row(
            f"`./manage.sh bench ingest`: rows/s of an HTTP upload until every row is confirmed ({args.rows:,} rows)",
            f"{rate['producer']:,.0f} rows/s",
            "a pika asynchronous publisher with confirms sending the same messages (same properties, `mandatory`, "
            f"window {args.window}, same queue emptied before each contender): {rate['baseline']:,.0f} rows/s",
            f"**{rate['producer'] / rate['baseline']:.2f}x** (against a publisher of smaller messages without "
            f"headers, type, timestamp or `mandatory`: {rate['producer'] / rate['minimal']:.2f}x)",
        ),
        Row(
            f"same: producer peak RSS, 10k rows vs {args.large:,} rows",
            f"{small_peak.peak / mib:.0f} MiB / {large_peak.peak / mib:.0f} MiB (idle {idle / mib:.0f} MiB)",
            "",
            f"**{large_peak.peak / small_peak.peak:.2f}x**",
        ),
    ]
    figures = {
        "rows_per_s_best": rate,
        "rss_mib": {"idle": idle / mib, "small_peak": small_peak.peak / mib, "large_peak": large_peak.peak / mib},
    }
    write_results("ingest", rows, figures, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
