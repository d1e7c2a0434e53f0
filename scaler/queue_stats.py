"""Every queue's ready and unacked counts with ONE management API call per tick.

KEDA's RabbitMQ scaler and home-grown scripts ask once per queue; with 200 job
types that is 200 requests a tick. `/api/queues/<vhost>?columns=...` answers
for all of them at once, and the policy reads the work, retry and dead-letter
queues of every type from that one answer.

The call asks for `disable_stats=true&enable_queue_totals=true`: the totals
then come straight from the queues' own metrics (visible within ~0.1 s of a
publish) instead of the statistics database, which lags by up to five seconds
for a queue that was idle, the very moment a backlog appears. That answer has
no consumer count, so the scaler counts consumers from its workers' heartbeats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httpx

from jobtypes.config import JobType
from scaler.policy import QueueStats

log = logging.getLogger(__name__)
PARAMS = {
    "disable_stats": "true",
    "enable_queue_totals": "true",
    "columns": "name,messages_ready,messages_unacknowledged",
}
#: What jobtypes.queue_check compares with the config: each queue's type and declaration arguments.
DECLARATION_PARAMS = {"disable_stats": "true", "columns": "name,type,arguments"}


@dataclass(frozen=True)
class RawCounts:
    ready: int
    unacked: int


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names ('/' when the path is empty, as the AMQP URI spec says)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class QueueStatsSource:
    def __init__(self, api_url: str, amqp_url: str, timeout: float = 3.0) -> None:
        parts = urlsplit(api_url)
        base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") + parts.path.rstrip("/")
        self.url = f"{base}/queues/{quote(vhost_of(amqp_url), safe='')}"
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        self.client = httpx.Client(auth=auth, timeout=timeout)
        self.calls = 0
        self.error: str | None = None

    def fetch(self) -> dict[str, RawCounts] | None:
        """All queues of the vhost by name, or None when the API cannot be read (error in `.error`)."""
        self.calls += 1
        try:
            response = self.client.get(self.url, params=PARAMS)
            response.raise_for_status()
            queues = response.json()
        except (httpx.HTTPError, ValueError) as error:
            message = f"{type(error).__name__}: {error}"[:300]
            if message != self.error:
                log.warning("RabbitMQ management API unreachable, making no scaling decisions: %s", message)
            self.error = message
            return None
        if self.error is not None:
            log.info("RabbitMQ management API reachable again")
        self.error = None
        return {
            item["name"]: RawCounts(int(item.get("messages_ready") or 0), int(item.get("messages_unacknowledged") or 0))
            for item in queues
        }

    def declared(self) -> dict[str, dict] | None:
        """Every queue of the vhost by name with its type and arguments, or None when the API cannot be read
        (logged; the config is then used unchecked and a refused declaration is logged by whoever declares)."""
        try:
            response = self.client.get(self.url, params=DECLARATION_PARAMS)
            response.raise_for_status()
            return {item["name"]: item for item in response.json()}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            log.warning("cannot read the queues' types from the management API to check the config: %s", error)
            return None

    def close(self) -> None:
        self.client.close()


def stats_for(job_type: JobType, queues: dict[str, RawCounts] | None) -> QueueStats | None:
    """The policy's view of one type from the one answer; a queue not declared yet counts as empty."""
    if queues is None:
        return None
    empty = RawCounts(0, 0)
    work = queues.get(job_type.queue, empty)
    retry = queues.get(job_type.retry_queue, empty)
    dead = queues.get(job_type.dead_queue, empty)
    return QueueStats(
        ready=work.ready,
        unacked=work.unacked,
        retrying=retry.ready + retry.unacked,
        dead=dead.ready + dead.unacked,
    )
