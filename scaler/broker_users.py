"""Who may do what on the broker: one RabbitMQ user per role, each with only the permissions it uses.

RabbitMQ checks three regexes per user and vhost, matched against queue and
exchange names: `configure` (declare, delete), `write` (publish to an
exchange, bind a queue) and `read` (consume, get, purge a queue, bind from an
exchange); declaring a queue with a dead-letter exchange also needs write on
that exchange and read on the queue. Topic permissions add a regex over the
routing keys a user may publish with to one topic exchange. From how each
component uses the broker (docs/design.md, "The message contract"):

* producer: declares each type's queues and routes, the control exchanges and
  the outcome routes; publishes rows to the default exchange (`amq.default`),
  wake-ups to the control exchange and cancel notices to the uploads
  exchange; consumes the outcome reports (the tracker).
* scaler: declares the same (before it starts a type's workers, so a worker
  never has to); consumes heartbeats and wake-ups on its own server-named
  queue (`amq.gen-...`); publishes stop requests. Its management API user
  has the `monitoring` tag (read-only, every vhost's queues), never
  `administrator`.
* worker of type T (one user per type): consumes T's work queue; publishes
  retry, dead-letter and give-back copies and outcome reports through the
  topic exchange `ROUTES_EXCHANGE` only, where its topic permission allows
  just T's three queues and the outcome queue as routing keys; publishes
  heartbeats; listens for stop requests and cancel notices on server-named
  exclusive queues (another connection's exclusive queue is locked to it).
  It declares nothing else, so it cannot delete a queue, publish through the
  default exchange (to any queue by name) or write to the control exchange.
  RabbitMQ ties purge to read: a worker could empty its own work queue, as it
  could by consuming it, and nothing else.

`broker_users(config)` derives them for a config; `apply` creates them
through the management API with an administrator's credential (locally,
`./manage.sh up`); `definitions` renders them as a definitions file for a
broker to load at boot (Kubernetes, scaler.deploy_secrets).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from common.config import JobsConfig, JobType
from common.control_messages import CONTROL_EXCHANGE, HEARTBEAT_EXCHANGE
from common.errors import AutoscalerError
from common.outcomes import DEAD_OUTCOMES_QUEUE, OUTCOMES_QUEUE, UPLOADS_EXCHANGE
from common.queues import DEAD_LETTERS_EXCHANGE, ROUTES_EXCHANGE, queue_arguments

#: Names of the users: `<prefix>-producer`, `<prefix>-scaler`, `<prefix>-worker-<type>`.
DEFAULT_PREFIX = "autoscaler"
DEFAULT_EXCHANGE = "amq.default"
#: Queues the broker names itself for a connection's own exclusive queues.
SERVER_NAMED = r"amq\.gen-.*"
#: The exchanges and queues every component shares, declared by the producer and the scaler.
SHARED = (
    CONTROL_EXCHANGE,
    HEARTBEAT_EXCHANGE,
    UPLOADS_EXCHANGE,
    OUTCOMES_QUEUE,
    DEAD_OUTCOMES_QUEUE,
    ROUTES_EXCHANGE,
    DEAD_LETTERS_EXCHANGE,
)
#: What declaring a type's queues and the outcome routes needs beyond configure: write on the work queues' dead-letter
#: exchange (a declaration naming it), read on it (binding `.dead` and the report queue to it) and on ROUTES_EXCHANGE.
DECLARER_WRITE = (DEFAULT_EXCHANGE, DEAD_LETTERS_EXCHANGE, OUTCOMES_QUEUE)
DECLARER_READ = (ROUTES_EXCHANGE, DEAD_LETTERS_EXCHANGE)
NOTHING = "^$"
API_TIMEOUT = 10.0


class Role(StrEnum):
    PRODUCER = "producer"
    SCALER = "scaler"
    WORKER = "worker"


class BrokerUserError(AutoscalerError):
    """The management API refused to create a user or its permissions; the message says which and why."""


@dataclass(frozen=True)
class BrokerUser:
    role: Role
    name: str
    #: the job type of a worker user, None for the others
    job_type: str | None
    tags: tuple[str, ...]
    configure: str
    write: str
    read: str
    #: topic permission on ROUTES_EXCHANGE: the routing keys (queue names) the user may publish with
    routes: str | None = None


def user_name(role: Role, job_type: str | None = None, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{role}" + (f"-{job_type}" if job_type else "")


def _names(names: Iterable[str], *patterns: str) -> str:
    """A regex matching exactly `names` (escaped) and `patterns`, or nothing at all."""
    alternatives = [re.escape(name) for name in names] + list(patterns)
    return f"^({'|'.join(alternatives)})$" if alternatives else NOTHING


def _type_queues(job_types: Iterable[JobType]) -> list[str]:
    return [queue for job_type in job_types for queue in queue_arguments(job_type)]


def broker_users(config: JobsConfig, prefix: str = DEFAULT_PREFIX) -> list[BrokerUser]:
    """The producer's, the scaler's and one worker user per configured type (see the module's docstring)."""
    queues = _type_queues(config.job_types.values())
    declared = [*queues, *SHARED]
    producer = BrokerUser(
        Role.PRODUCER,
        user_name(Role.PRODUCER, prefix=prefix),
        None,
        (),
        configure=_names(declared),
        write=_names([*DECLARER_WRITE, *queues, DEAD_OUTCOMES_QUEUE, CONTROL_EXCHANGE, UPLOADS_EXCHANGE]),
        read=_names([*queues, OUTCOMES_QUEUE, DEAD_OUTCOMES_QUEUE, *DECLARER_READ]),
    )
    scaler = BrokerUser(
        Role.SCALER,
        user_name(Role.SCALER, prefix=prefix),
        None,
        ("monitoring",),
        configure=_names(declared, SERVER_NAMED),
        write=_names([*DECLARER_WRITE, *queues, CONTROL_EXCHANGE], SERVER_NAMED),
        read=_names([*queues, *DECLARER_READ, HEARTBEAT_EXCHANGE, CONTROL_EXCHANGE], SERVER_NAMED),
    )
    return [producer, scaler, *(worker_user(job_type, prefix) for job_type in config.job_types.values())]


def worker_user(job_type: JobType, prefix: str = DEFAULT_PREFIX) -> BrokerUser:
    return BrokerUser(
        Role.WORKER,
        user_name(Role.WORKER, job_type.name, prefix),
        job_type.name,
        (),
        configure=_names([], SERVER_NAMED),
        write=_names([ROUTES_EXCHANGE, HEARTBEAT_EXCHANGE], SERVER_NAMED),
        read=_names([job_type.queue, CONTROL_EXCHANGE, UPLOADS_EXCHANGE], SERVER_NAMED),
        routes=_names([*queue_arguments(job_type), OUTCOMES_QUEUE]),
    )


def new_password() -> str:
    return secrets.token_hex(24)


def with_credentials(url: str, username: str, password: str) -> str:
    """`url` (an AMQP or management API URL) with its user and password replaced."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names ('/' when it names none, as pika reads it)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def api_base(api_url: str) -> tuple[str, tuple[str, str]]:
    """The management API's base URL without credentials, and the credentials."""
    parts = urlsplit(api_url)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}")).rstrip("/")
    return base, (unquote(parts.username or ""), unquote(parts.password or ""))


def apply(api_url: str, vhost: str, users: dict[BrokerUser, str]) -> None:
    """Create or update each user (with its password), its permissions on `vhost` and its topic permission.

    `api_url` carries an administrator's credential (http://user:password@host:15672/api)."""
    base, auth = api_base(api_url)
    with httpx.Client(base_url=base, auth=auth, timeout=API_TIMEOUT) as client:
        for user, password in users.items():
            for path, body in _requests(user, password, vhost):
                try:
                    response = client.put(path, json=body)
                except httpx.HTTPError as error:
                    raise BrokerUserError(f"cannot reach RabbitMQ's management API at {base}: {error}") from error
                if response.status_code >= 300:
                    raise BrokerUserError(
                        f"RabbitMQ's management API at {base} refused PUT {path} for user {user.name!r}: "
                        f"{response.status_code} {response.text[:200]}"
                    )


def _requests(user: BrokerUser, password: str, vhost: str) -> list[tuple[str, dict]]:
    name, where = quote(user.name, safe=""), quote(vhost, safe="")
    requests = [
        (f"/users/{name}", {"password": password, "tags": ",".join(user.tags)}),
        (f"/permissions/{where}/{name}", {"configure": user.configure, "write": user.write, "read": user.read}),
    ]
    if user.routes is not None:
        requests.append(
            (f"/topic-permissions/{where}/{name}", {"exchange": ROUTES_EXCHANGE, "write": user.routes, "read": NOTHING})
        )
    return requests


def delete(api_url: str, names: Iterable[str]) -> None:
    """Delete these users (a missing one is fine)."""
    base, auth = api_base(api_url)
    with httpx.Client(base_url=base, auth=auth, timeout=API_TIMEOUT) as client:
        for name in names:
            client.delete(f"/users/{quote(name, safe='')}")


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256` hash: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(vhost: str, users: dict[BrokerUser, str], admin: tuple[str, str]) -> dict:
    """A definitions document (load_definitions) with the vhost, an administrator for operators, the users
    and their permissions; passwords only as salted hashes."""
    everyone = [(admin[0], admin[1], ("administrator",)), *((u.name, p, u.tags) for u, p in users.items())]
    return {
        "vhosts": [{"name": vhost}],
        "users": [
            {
                "name": name,
                "password_hash": password_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": list(tags),
            }
            for name, password, tags in everyone
        ],
        "permissions": [{"user": admin[0], "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}]
        + [{"user": u.name, "vhost": vhost, "configure": u.configure, "write": u.write, "read": u.read} for u in users],
        "topic_permissions": [
            {"user": u.name, "vhost": vhost, "exchange": ROUTES_EXCHANGE, "write": u.routes, "read": NOTHING}
            for u in users
            if u.routes is not None
        ],
    }
