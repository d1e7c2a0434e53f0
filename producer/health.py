"""Health that tells the truth and is never starved by uploads.

- `GET /livez` (liveness) depends on nothing but the process: it answers from
  the event loop, with no thread-pool work and no broker call, so a producer
  busy with forty uploads is not restarted by its liveness probe.
- `GET /readyz` (readiness) reports the broker: 200 when the last check
  reached it, else 503 with the error. The check runs on its own thread every
  `PRODUCER_HEALTH_INTERVAL_SECONDS`; the endpoint only reads the result, so
  it never blocks the event loop or waits for a thread-pool slot. The same
  connection looks up the job types' queues for `producer.orphans`.
- `GET /healthz` is the readiness document with the upload tracker's state,
  for people and scripts that want to read it: 200 whether or not the broker
  is reachable (`/readyz` says that), 503 when the tracker thread died or made
  no progress for `UPLOADS_TRACKER_STALL_SECONDS` while reports wait, naming
  it in `problems` (the tracker replaces such a thread itself; the 503 says
  counting has stopped meanwhile).

All three are public, and a caller without the token learns only the status
and `ok` / `failing` per part; the error texts (which can name the broker's
host and user) are for authenticated callers (`common.health_view`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pika
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.connections import connect_any, node_label
from common.health_view import visible_health
from producer.orphans import OrphanWatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerState:
    reachable: bool
    error: str | None
    checked_at: float | None
    #: host:port of the node that answered (any node of RABBITMQ_URLS counts)
    node: str | None = None


class BrokerHealth:
    """The broker's reachability, refreshed on a daemon thread, read lock-free by the endpoints."""

    def __init__(self, interval_seconds: float, orphans: OrphanWatch | None = None) -> None:
        self.interval_seconds = interval_seconds
        self.orphans = orphans
        self.state = BrokerState(False, "not checked yet", None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> BrokerState:
        try:
            connection, url = connect_any("producer-readyz")
            try:
                if self.orphans is not None:
                    self.orphans.check_queues(connection)
            finally:
                connection.close()
            state = BrokerState(True, None, time.time(), node_label(url))
        except pika.exceptions.AMQPError as failure:
            state = BrokerState(False, f"{type(failure).__name__}: {failure}"[:500], time.time())
        if state.reachable != self.state.reachable:
            log.info("broker %s", "reachable" if state.reachable else f"unreachable: {state.error}")
        self.state = state
        return state

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="broker-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def parts(self) -> dict[str, bool]:
        """Each part's health, for the public view."""
        return {"broker": self.state.reachable}

    def document(self) -> dict[str, Any]:
        state = self.state
        age = None if state.checked_at is None else round(time.time() - state.checked_at, 3)
        return {
            "status": "ready" if state.reachable else "not ready",
            "broker": {
                "reachable": state.reachable,
                "node": state.node,
                "error": state.error,
                "checked_seconds_ago": age,
            },
        }


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    health: BrokerHealth = app.state.health
    health.start()
    try:
        yield
    finally:
        health.stop()


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    health: BrokerHealth = request.app.state.health
    document = health.document()
    status = 200 if document["broker"]["reachable"] else 503
    return JSONResponse(visible_health(request.scope, document, health.parts()), status_code=status)


def healthz_document(broker: dict[str, Any], tracker: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    """(status code, document) of /healthz: the readiness document, the tracker's state, and its problem if any."""
    problems = [f"tracker: {tracker['problem']}"] if tracker is not None and tracker["problem"] else []
    document = {**broker, "status": "unhealthy" if problems else "ok", "problems": problems, "upload_tracker": tracker}
    return (503 if problems else 200), document
