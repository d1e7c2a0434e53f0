"""Time a consumer process draining a queue, measured the same way from outside for every contender.

Shared by the worker benchmarks. A run fills the queue (not timed), starts
the consumer process, and times from the moment the queue has a consumer to
the moment no message is left ready (both seen over AMQP, polled every few
milliseconds); then it waits (untimed) until the management API shows
nothing unacked in a sample taken after that moment, stops the process, and
checks nothing came back, i.e. every message was acked. Starting the
interpreter is not part of the figure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pika

from common.config import JobType
from common.queues import declare_queues
from harness.broker import AUTH, Broker
from harness.processes import Service
from harness.waiting import wait_until

POLL_SECONDS = 0.005


def fill(broker: Broker, job_type: JobType, bodies: list[bytes], upload_id: str) -> None:
    """Publish one persistent message per body, shaped like the producer's rows (message id, upload header)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    channel = connection.channel()
    declare_queues(channel, job_type)
    for row, body in enumerate(bodies, start=1):
        properties = pika.BasicProperties(
            delivery_mode=2,
            content_type="application/json",
            message_id=f"{upload_id}:{row}",
            type=job_type.name,
            timestamp=int(time.time()),
            headers={"upload_id": upload_id},
        )
        channel.basic_publish("", job_type.queue, body, properties)
    channel.queue_declare(job_type.queue, passive=True)  # a round trip: everything above has arrived
    connection.close()


def timed_drain(broker: Broker, queue: str, start: Callable[[], Service]) -> float:
    """Seconds from the process consuming `queue` to nothing ready in it; every message acked at the end."""
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    channel = connection.channel()

    def depth() -> pika.frame.Method:
        return channel.queue_declare(queue, passive=True).method

    process = start()
    try:
        wait_until(lambda: depth().consumer_count > 0, timeout=60, interval=POLL_SECONDS, what=f"a consumer on {queue}")
        started = time.perf_counter()
        wait_until(lambda: depth().message_count == 0, timeout=900, interval=POLL_SECONDS, what=f"{queue} drained")
        seconds = time.perf_counter() - started
        drained_at = time.time()
        wait_until(lambda: _idle_since(broker, queue, drained_at), timeout=60, interval=1, what=f"{queue} all acked")
    finally:
        code = process.stop(timeout=60)
    remaining = depth().message_count
    connection.close()
    if code not in (0, None) or remaining:
        raise RuntimeError(f"{queue}: exit code {code}, {remaining} message(s) not acked; see {process.log_path}")
    return seconds


def _idle_since(broker: Broker, queue: str, moment: float) -> bool:
    """The management API's newest sample, taken after `moment`, shows nothing ready and nothing unacked.

    Its samples fall on 5 s boundaries, so one stamped at least 5 s after `moment` was measured after it.
    """
    stats = httpx.get(
        f"{broker.api}/queues/{quote(broker.vhost, safe='')}/{quote(queue, safe='')}",
        params={"lengths_age": "30", "lengths_incr": "5"},
        auth=AUTH,
        timeout=10,
    ).json()
    newest = [stats.get(f"messages_{kind}_details", {}).get("samples", [{}])[0] for kind in ("ready", "unacknowledged")]
    return all(sample.get("timestamp", 0) / 1000 >= moment + 5 and sample.get("sample") == 0 for sample in newest)


def round_rates(
    contenders: dict[str, Callable[[], float]], rounds: int, count: int, unit: str
) -> dict[str, list[float]]:
    """Run each contender once per round, alternating the order; every round's rate (`count` / seconds) of each."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else names[::-1]:
            rate = count / contenders[name]()
            print(f"  round {round_number + 1} {name:8}: {rate:9,.0f} {unit}", flush=True)
            rates[name].append(rate)
    return rates


def best_rates(contenders: dict[str, Callable[[], float]], rounds: int, count: int, unit: str) -> dict[str, float]:
    """The best round's rate of each contender (see `round_rates`)."""
    return {name: max(rates) for name, rates in round_rates(contenders, rounds, count, unit).items()}


def write_job_config(directory: Path, name: str, settings: dict) -> Path:
    path = directory / f"{name}.config.json"
    path.write_text(json.dumps({name: settings}))
    return path
