"""The worker benchmark's real peers: a no-op dramatiq actor and a no-op Celery task on the benchmark's queue.

    python -m dramatiq bench.support.peers ...                   (the benchmark starts them, bench/worker.py)
    python -m celery -A bench.support.peers:celery_app worker ...
    python -m bench.support.peers dramatiq|celery COUNT       (fills BENCH_QUEUE with COUNT messages)

Both read the broker from RABBITMQ_URL and the queue from BENCH_QUEUE. The
messages are each library's own (sent with its own API, persistent, as its
users send them), so each peer consumes what it was built for; the count,
broker and no-op work are the same as the runtime's.
"""

from __future__ import annotations

import os
import sys

import dramatiq
from celery import Celery
from dramatiq.brokers.rabbitmq import RabbitmqBroker

URL = os.environ["RABBITMQ_URL"]
QUEUE = os.environ["BENCH_QUEUE"]

dramatiq_broker = RabbitmqBroker(url=URL)
dramatiq.set_broker(dramatiq_broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def dramatiq_noop() -> None:
    """Does nothing, like the runtime's no-op handler."""


celery_app = Celery("bench", broker=URL)
celery_app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # BENCH_CELERY_TUNED: late acks (at-least-once, as the runtime) and a prefetch of BENCH_PREFETCH messages.
    **(
        {"task_acks_late": True, "worker_prefetch_multiplier": int(os.environ["BENCH_PREFETCH"])}
        if os.environ.get("BENCH_CELERY_TUNED")
        else {}
    ),
)


@celery_app.task(name="noop")
def celery_noop() -> None:
    """Does nothing, like the runtime's no-op handler."""


def fill(peer: str, count: int) -> None:
    if peer == "dramatiq":
        for _ in range(count):
            dramatiq_noop.send()
    else:
        with celery_app.producer_or_acquire() as producer:
            for _ in range(count):
                celery_noop.apply_async(producer=producer)


if __name__ == "__main__":
    fill(sys.argv[1], int(sys.argv[2]))
