"""The baseline consumer of the worker benchmark: the simplest correct pika consumer.

    python -m bench.support.plain_consumer QUEUE PREFETCH

basic_consume with manual acks, one ack per message in the callback, the
given prefetch; runs until SIGTERM. It does nothing with the message, like
the runtime's no-op handler.
"""

from __future__ import annotations

import os
import signal
import sys

import pika


def main() -> int:
    queue, prefetch = sys.argv[1], int(sys.argv[2])
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["RABBITMQ_URL"]))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    channel.basic_consume(queue, lambda ch, method, properties, body: ch.basic_ack(method.delivery_tag))
    signal.signal(signal.SIGTERM, lambda *_: channel.stop_consuming())
    channel.start_consuming()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
