"""Connection settings from the environment, with the documented defaults (README, configuration reference).

Every component reads the broker's address, the management API's address and
the config path from here, so one environment works for the whole stack.

RABBITMQ_URLS lists the broker's nodes (comma-separated AMQP URLs; a single
RABBITMQ_URL is still read as a one-node list), RABBITMQ_API_URLS the nodes'
management APIs, the same way. Every URL is checked when a process starts: a
wrong entry stops it with the setting's name and the entry's position.
`node_parameters` gives the pika parameters of one node; trying the nodes in
turn is `common.connections.Link`'s job.

Each process's broker URL carries its own broker user (scaler.broker_users:
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

from common.env import SettingsError, env_int, env_str

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_RABBITMQ_API_URL = "http://guest:guest@localhost:15672/api"
#: Seconds between AMQP heartbeats (0: none).
DEFAULT_HEARTBEAT_SECONDS = 10
#: The metrics-only port: off unless set (on a laptop, /metrics with the token is enough).
DEFAULT_METRICS_PORT = 0
DEFAULT_METRICS_HOST = "0.0.0.0"


AMQP_SCHEMES = ("amqp", "amqps")
API_SCHEMES = ("http", "https")


def node_urls(list_name: str, single_name: str, default: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
    """The URLs of `list_name` (comma-separated), else `single_name` as a one-node list, else `default`; each
    checked for a scheme in `schemes` and a host, so a typo stops the process at start, naming the entry."""
    name, text = list_name, env_str(list_name, "")
    if not text.strip():
        name, text = single_name, env_str(single_name, default)
    urls = tuple(entry.strip() for entry in text.split(","))
    for number, url in enumerate(urls, start=1):
        where = f"{name} entry {number} of {len(urls)}"
        if not url:
            raise SettingsError(f"{where} is empty (a stray comma?)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as error:
            raise SettingsError(f"{where} is not a URL: {error}") from None
        if parts.scheme not in schemes or not parts.hostname:
            wanted = " or ".join(f"{scheme}://host" for scheme in schemes)
            raise SettingsError(f"{where} ({redact_url(url)!r}) is not of the form {wanted}")
    return urls


def rabbitmq_urls() -> tuple[str, ...]:
    """The AMQP URL of every broker node (RABBITMQ_URLS, or RABBITMQ_URL)."""
    return node_urls("RABBITMQ_URLS", "RABBITMQ_URL", DEFAULT_RABBITMQ_URL, AMQP_SCHEMES)


def rabbitmq_api_urls() -> tuple[str, ...]:
    """The management API URL of every broker node (RABBITMQ_API_URLS, or RABBITMQ_API_URL)."""
    return node_urls("RABBITMQ_API_URLS", "RABBITMQ_API_URL", DEFAULT_RABBITMQ_API_URL, API_SCHEMES)


def rabbitmq_url() -> str:
    """The first node's AMQP URL: what names the vhost and the user (every node serves the same ones)."""
    return rabbitmq_urls()[0]


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


def redact_urls(urls: tuple[str, ...]) -> str:
    """The node list, each password replaced, for logs."""
    return ",".join(redact_url(url) for url in urls)


def node_parameters(connection_name: str, url: str) -> pika.URLParameters:
    """pika parameters for one node, named so the management API shows who is connected.

    A short heartbeat lets both sides notice a dead peer within seconds, which is
    what makes a killed worker's unacked message return to the queue quickly.
    """
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": connection_name}
    parameters.heartbeat = env_int("RABBITMQ_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS, minimum=0)
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return parameters
