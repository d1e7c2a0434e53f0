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

With several nodes (RABBITMQ_API_URLS) the call goes to the first node that
answers, in list order; a node that failed is skipped for
RABBITMQ_API_SKIP_SECONDS, so a dead node costs one timeout per that period,
not one per tick. Every node of a cluster answers for every queue. The status
says which node answered and which failed (`node`, `failed`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httpx

from common.config import JobType
from common.env import env_float
from scaler.broker_users import api_base
from scaler.policy import QueueStats

log = logging.getLogger(__name__)
#: Seconds a management API node that failed is left out before it is asked again (RABBITMQ_API_SKIP_SECONDS).
DEFAULT_SKIP_SECONDS = 30.0
PARAMS = {
    "disable_stats": "true",
    "enable_queue_totals": "true",
    "columns": "name,messages_ready,messages_unacknowledged",
}
#: What common.queue_check compares with the config: each queue's type and declaration arguments.
DECLARATION_PARAMS = {"disable_stats": "true", "columns": "name,type,arguments"}


@dataclass(frozen=True)
class RawCounts:
    ready: int
    unacked: int


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names ('/' when the path is empty, as the AMQP URI spec says)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class ApiNode:
    """One node's management API: where its queue list is, and until when it is left out after a failure."""

    def __init__(self, api_url: str, vhost: str, timeout: float) -> None:
        base, auth = api_base(api_url)
        self.label = urlsplit(base).netloc
        self.url = f"{base}/queues/{quote(vhost, safe='')}"
        self.client = httpx.Client(auth=auth if auth[0] else None, timeout=timeout)
        self.skip_until = 0.0

    def queues(self, params: dict[str, str]) -> list[dict]:
        response = self.client.get(self.url, params=params)
        response.raise_for_status()
        return response.json()


class QueueStatsSource:
    def __init__(
        self, api_urls: str | tuple[str, ...], amqp_url: str, timeout: float = 3.0, skip_seconds: float | None = None
    ) -> None:
        urls = (api_urls,) if isinstance(api_urls, str) else api_urls  # one node's URL, not its characters
        self.nodes = [ApiNode(url, vhost_of(amqp_url), timeout) for url in urls]
        self.skip_seconds = skip_seconds or env_float("RABBITMQ_API_SKIP_SECONDS", DEFAULT_SKIP_SECONDS, above=0)
        self.error: str | None = None
        #: the node that answered last, and the nodes that failed (with why) on the last fetch
        self.node: str | None = None
        self.failed: dict[str, str] = {}

    def fetch(self) -> dict[str, RawCounts] | None:
        """All queues of the vhost by name, from the first node that answers, or None when none does (error in
        `.error`)."""
        answer = self._ask(PARAMS)
        if answer is None:
            message = self.failures()
            if message != self.error:
                log.warning("RabbitMQ management API unreachable, making no scaling decisions: %s", message)
            self.error, self.node = message, None
            return None
        return self._answered(*answer)

    def failures(self) -> str:
        """The nodes that failed on the last ask, and why, on one line."""
        return "; ".join(f"{label}: {why}" for label, why in self.failed.items())

    def _ask(self, params: dict[str, str]) -> tuple[ApiNode, list[dict]] | None:
        """The queue list from the first node that answers (with that node), or None; the nodes that failed, with
        why, in `.failed`. Nodes left out after a failure are asked only when no other node answers."""
        now = time.monotonic()
        order = sorted(self.nodes, key=lambda node: node.skip_until > now)
        self.failed = {}
        for node in order:
            try:
                return node, node.queues(params)
            except (httpx.HTTPError, ValueError) as error:
                node.skip_until = time.monotonic() + self.skip_seconds
                self.failed[node.label] = f"{type(error).__name__}: {error}"[:300]
        return None

    def _answered(self, node: ApiNode, queues: list[dict]) -> dict[str, RawCounts]:
        if self.error is not None or node.label != self.node:
            log.info("RabbitMQ management API answering from %s", node.label)
        self.error, self.node = None, node.label
        return {
            item["name"]: RawCounts(int(item.get("messages_ready") or 0), int(item.get("messages_unacknowledged") or 0))
            for item in queues
        }

    def declared(self) -> dict[str, dict] | None:
        """Every queue of the vhost by name with its type and arguments, or None when the API cannot be read
        (logged; the config is then used unchecked and a refused declaration is logged by whoever declares)."""
        answer = self._ask(DECLARATION_PARAMS)
        try:
            if answer is not None:
                return {item["name"]: item for item in answer[1]}
            error = self.failures()
        except (KeyError, TypeError) as unexpected:
            error = f"unexpected answer: {unexpected!r}"
        log.warning("cannot read the queues' types from the management API to check the config: %s", error)
        return None

    def close(self) -> None:
        for node in self.nodes:
            node.client.close()


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
