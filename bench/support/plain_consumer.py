"""The worker benchmark's plain pika consumers: the simplest correct consumer, acking one way or the other.

    python -m bench.support.plain_consumer QUEUE PREFETCH each|group

basic_consume with manual acks at the given channel prefetch; runs until
SIGTERM and does nothing with a message, like the runtime's no-op handler.

* each: one `basic_ack(tag)` per message, in the callback (a frame and a socket write each);
* group: after every batch of deliveries pika reads off the socket, one
  `basic_ack(highest tag, multiple=True)`, the way the runtime acks its groups
  (workers/consumer.py), so the two differ in what the runtime does, not in acking.
"""

from __future__ import annotations

import os
import signal
import sys

import pika


def consume_acking_each(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> None:
    channel.basic_consume(queue, lambda ch, method, properties, body: ch.basic_ack(method.delivery_tag))
    signal.signal(signal.SIGTERM, lambda *_: channel.stop_consuming())
    channel.start_consuming()


def consume_acking_groups(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> None:
    highest = acked = 0
    stopping = False

    def on_message(ch, method, properties, body) -> None:
        nonlocal highest
        highest = method.delivery_tag

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    channel.basic_consume(queue, on_message)
    while not stopping:
        channel.connection.process_data_events(time_limit=0.5)
        if highest > acked:
            channel.basic_ack(highest, multiple=True)
            acked = highest


MODES = {"each": consume_acking_each, "group": consume_acking_groups}


def main() -> int:
    queue, prefetch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode not in MODES:
        print(f"plain_consumer: ack mode {mode!r} is not one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["RABBITMQ_URL"]))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    MODES[mode](channel, queue)
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
