"""One way to hold a long-lived AMQP connection to a broker of several nodes, and to get it back when it drops.

Every long-lived connection (the worker's consumer, the scaler's worker
channel, the upload tracker) and every short one (the producer's declare and
readiness check) goes through a `Link`: `connect` tries the nodes of
RABBITMQ_URLS in turn, starting at a random one so replicas spread over the
cluster, and remembers which one answered; `run` serves a connection until the
caller is done and, when the connection is lost (the node died, was
restarted, or the caller's own check failed), moves on to the next node and
connects again, waiting between rounds with capped exponential backoff plus
jitter (tenacity's `wait_exponential_jitter`), so replicas that lost the same
node do not all come back in step. A connection that lasted longer than the
longest wait counts as working: the next loss starts the backoff afresh.

While it reconnects a link says so: `state` (`LinkState`) and `reason` (which
node was lost and why, when the next try is), which each component shows in
its own status. The link changes nothing about what is sent: message ids,
Idempotency-Key and "first final outcome wins" are the callers', and they
hold across nodes because a message is only counted once the broker confirmed
it, on whichever node that was.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from enum import StrEnum
from types import SimpleNamespace
from urllib.parse import urlsplit

import pika
from pika.adapters.blocking_connection import BlockingConnection
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from common.env import env_float
from common.settings import node_parameters, rabbitmq_urls

log = logging.getLogger(__name__)
#: Errors that mean "this connection is gone": reconnect (a caller may add its own, e.g. a refused publish).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
#: First wait after a failed round over every node, and the jitter added to each wait.
INITIAL_BACKOFF_SECONDS = 0.5
#: The longest wait between reconnect rounds (RABBITMQ_RECONNECT_MAX_SECONDS).
DEFAULT_MAX_BACKOFF_SECONDS = 10.0
#: How often a backoff wait looks up to see whether the caller wants to stop.
STOP_CHECK_SECONDS = 0.2


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class NoNodeReachable(pika.exceptions.AMQPConnectionError):
    """No node of the list answered; the message names each node and why."""


def node_label(url: str) -> str:
    """host:port of a node, for statuses and logs (never the credential)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"


def max_backoff_seconds() -> float:
    return env_float("RABBITMQ_RECONNECT_MAX_SECONDS", DEFAULT_MAX_BACKOFF_SECONDS, above=0)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300] if str(error) else type(error).__name__


class Link:
    """The nodes one named connection may use, the one it uses now, and how it gets back after a loss."""

    def __init__(
        self,
        name: str,
        urls: tuple[str, ...] | None = None,
        *,
        errors: tuple[type[BaseException], ...] = CONNECTION_ERRORS,
        should_stop: Callable[[], bool] = lambda: False,
        on_lost: Callable[[BaseException], None] = lambda error: None,
        on_wait: Callable[[], None] = lambda: None,
        max_backoff: float | None = None,
    ) -> None:
        self.name = name
        self.urls = urls or rabbitmq_urls()
        self.errors = errors
        self.should_stop = should_stop
        self.on_lost = on_lost
        self.on_wait = on_wait
        self.max_backoff = max_backoff or max_backoff_seconds()
        self._backoff = wait_exponential_jitter(
            multiplier=INITIAL_BACKOFF_SECONDS, max=self.max_backoff, jitter=INITIAL_BACKOFF_SECONDS
        )
        #: the node tried first by the next `connect`, and the URL of the node connected now (or last)
        self.next = random.randrange(len(self.urls))
        self.url: str | None = None
        self.state = LinkState.CONNECTING
        self.reason: str | None = None
        #: failed sessions in a row (reset once a connection lasted longer than the longest wait)
        self.failures = 0

    @property
    def node(self) -> str | None:
        return node_label(self.url) if self.url else None

    def connect(self) -> BlockingConnection:
        """Try every node once, from `next` on; the first that answers becomes the current node."""
        failed = []
        for offset in range(len(self.urls)):
            index = (self.next + offset) % len(self.urls)
            try:
                connection = pika.BlockingConnection(node_parameters(self.name, self.urls[index]))
            except pika.exceptions.AMQPConnectionError as error:
                failed.append(f"{node_label(self.urls[index])} ({_reason(error)})")
                continue
            self.next, self.url = index, self.urls[index]
            return connection
        raise NoNodeReachable("no RabbitMQ node answered: " + "; ".join(failed))

    def run(self, serve: Callable[[BlockingConnection], None]) -> None:
        """Connect and `serve(connection)` until it returns or `should_stop`; reconnect after any of `errors`."""
        retrying = Retrying(
            retry=retry_if_exception_type(self.errors),
            after=self._after_failure,
            wait=lambda state: self._backoff(SimpleNamespace(attempt_number=self.failures)),
            stop=lambda state: self.should_stop(),
            before_sleep=self._report_wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(self._session, serve)
        except self.errors:
            if not self.should_stop():
                raise
        self.state, self.reason = LinkState.STOPPED, None

    def _session(self, serve: Callable[[BlockingConnection], None]) -> None:
        if self.should_stop():
            return
        connection = self.connect()
        began = time.monotonic()
        self.state, self.reason = LinkState.CONNECTED, f"connected to {self.node}"
        log.info("%s connected to RabbitMQ node %s", self.name, self.node)
        try:
            serve(connection)
        finally:
            if time.monotonic() - began > self.max_backoff:
                self.failures = 0  # it worked for a while: this is a new failure, not the same one again
            if connection.is_open:
                try:
                    connection.close()
                except CONNECTION_ERRORS:
                    pass

    def _after_failure(self, state: RetryCallState) -> None:
        """Count the failure and move past the lost node, so the next round starts at another one."""
        assert state.outcome is not None
        error = state.outcome.exception()
        assert error is not None
        self.failures += 1
        if self.state is LinkState.CONNECTED:
            self.next = (self.next + 1) % len(self.urls)
            self.reason = f"lost {self.node}: {_reason(error)}"
        else:
            self.reason = _reason(error)
        self.state = LinkState.RECONNECTING
        self.on_lost(error)

    def _report_wait(self, state: RetryCallState) -> None:
        self.reason = f"{self.reason}; reconnecting in {state.upcoming_sleep:.1f} s (attempt {self.failures})"
        log.warning("%s: %s", self.name, self.reason)

    def _sleep(self, seconds: float) -> None:
        """Wait, looking up every STOP_CHECK_SECONDS: a caller told to stop does not sit out the backoff."""
        deadline = time.monotonic() + seconds
        while not self.should_stop() and time.monotonic() < deadline:
            time.sleep(min(STOP_CHECK_SECONDS, max(deadline - time.monotonic(), 0)))
            self.on_wait()


def connect_any(name: str) -> tuple[BlockingConnection, str]:
    """A short-lived connection to whichever node answers first (from a random one), and that node's URL."""
    link = Link(name)
    connection = link.connect()
    assert link.url is not None
    return connection, link.url
