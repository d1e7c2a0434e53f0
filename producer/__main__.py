"""`python -m producer`: serve uploads on PRODUCER_HOST:PRODUCER_PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from jobtypes.config import ConfigError
from jobtypes.settings import rabbitmq_url, redact_url
from producer.app import create_app
from producer.settings import ProducerSettings
from uploads.errors import StoreUnavailable


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("pika").setLevel(logging.WARNING)
    settings = ProducerSettings.from_environment()
    try:
        app = create_app(settings)
    except (ConfigError, StoreUnavailable) as error:
        print(f"producer: cannot start: {error}", file=sys.stderr)
        return 2
    logging.getLogger("producer").info(
        "producer listening on http://%s:%d, broker %s, upload store %s, token %s",
        settings.host,
        settings.port,
        redact_url(rabbitmq_url()),
        redact_url(settings.uploads.database_url),
        "required" if settings.token else "not required",
    )
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
