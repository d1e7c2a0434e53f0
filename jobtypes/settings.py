"""Connection settings from the environment, with the documented defaults (README, configuration reference).

Every component reads the broker's address, the management API's address and
the config path from here, so one environment works for the whole stack.

Each process's RABBITMQ_URL carries its own broker user (scaler.broker_users:
the producer's, the scaler's, one per job type's workers); the defaults, the
development broker's guest, are for a laptop only. METRICS_PORT gives the
producer and the scaler a second port serving only Prometheus metrics, without
the token: the app's own /metrics needs the token like every path, and a
scraper should not hold a credential that can also upload or pause.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika

from jobtypes.env import env_int, env_str

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_RABBITMQ_API_URL = "http://guest:guest@localhost:15672/api"
#: Seconds between AMQP heartbeats (0: none).
DEFAULT_HEARTBEAT_SECONDS = 10
#: The metrics-only port: off unless set (on a laptop, /metrics with the token is enough).
DEFAULT_METRICS_PORT = 0
DEFAULT_METRICS_HOST = "0.0.0.0"


def rabbitmq_url() -> str:
    return env_str("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)


def rabbitmq_api_url() -> str:
    return env_str("RABBITMQ_API_URL", DEFAULT_RABBITMQ_API_URL)


def metrics_address() -> tuple[str, int] | None:
    """(host, port) of the metrics-only port, None when METRICS_PORT is unset or 0."""
    port = env_int("METRICS_PORT", DEFAULT_METRICS_PORT, minimum=0)
    return (env_str("METRICS_HOST", DEFAULT_METRICS_HOST), port) if port else None


def jobs_config_path() -> Path:
    return Path(env_str("JOBS_CONFIG", REPO_ROOT / "jobs.config.json"))


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and status pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connection_parameters(connection_name: str, url: str | None = None) -> pika.URLParameters:
    """pika parameters for `url` (default RABBITMQ_URL), named so the management API shows who is connected.

    A short heartbeat lets both sides notice a dead peer within seconds, which is
    what makes a killed worker's unacked message return to the queue quickly.
    """
    parameters = pika.URLParameters(url or rabbitmq_url())
    parameters.client_properties = {"connection_name": connection_name}
    parameters.heartbeat = env_int("RABBITMQ_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS, minimum=0)
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return parameters
