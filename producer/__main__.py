"""`python -m producer`: serve uploads on PRODUCER_HOST:PRODUCER_PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from prometheus_client import start_http_server

from common.auth import describe_rule
from common.config import ConfigError
from common.env import SettingsError
from common.settings import metrics_address, rabbitmq_urls, redact_url, redact_urls
from producer.app import create_app
from producer.settings import ProducerSettings
from uploads.errors import StoreUnavailable


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        settings = ProducerSettings.from_environment()
        rabbitmq_urls()  # every node's URL checked before the producer starts
    except SettingsError as error:
        print(f"producer: cannot start: {error}", file=sys.stderr)
        return 2
    # The event loop (probes, bodies being received) shares the GIL with the threads that check and publish
    # rows; a shorter switch interval lets it in sooner when it has something to do.
    sys.setswitchinterval(0.001)
    try:
        app = create_app(settings)
    except (ConfigError, StoreUnavailable) as error:
        print(f"producer: cannot start: {error}", file=sys.stderr)
        return 2
    logging.getLogger("producer").info(
        "producer listening on http://%s:%d, broker %s, upload store %s, %s",
        settings.host,
        settings.port,
        redact_urls(rabbitmq_urls()),
        redact_url(settings.uploads.database_url),
        describe_rule(settings.auth),
    )
    serve_metrics_port()
    # No proxy-header rewriting: the client address must be the socket's (see common.auth).
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info", proxy_headers=False)
    return 0


def serve_metrics_port() -> None:
    """Metrics only, without the token, on METRICS_PORT (common.settings), from prometheus_client's server."""
    address = metrics_address()
    if address is not None:
        start_http_server(address[1], addr=address[0])
        logging.getLogger("producer").info("metrics only on http://%s:%d/metrics, without the token", *address)


if __name__ == "__main__":
    sys.exit(main())
