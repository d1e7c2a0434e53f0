"""Bounded work per upload and in total: the producer's limits, and the admission that enforces the shared ones.

Per upload (`RowLimits`, applied while rows are checked): the header's size,
each row's encoded message (far below RabbitMQ's `max_message_size`, so a row
can never close the channel halfway through an upload), and the JSON bodies'
size relative to the upload's (each body repeats every header name, so a
file of long header names and empty rows would otherwise grow a thousandfold
on disk).

CPU-bound steps (`WorkThreads`): checking rows and publishing run on at
most `work_threads` threads at once. Python runs one thread at a time, so
more would not go faster; they would only make the event loop wait longer
for its turn, and with it the health probes and every body being received.

In total (`Admission`, an ASGI middleware in front of the upload routes): at
most `max_concurrent_uploads` at once and at most `max_spool_bytes` of spooled
uploads and bodies on disk. A request over either answers 429 with
`Retry-After` before it reads a byte; an upload whose spooling would cross the
total is stopped the same way, and publishes nothing. Spooled bytes are
charged to the request's `Ticket` (found through a context variable, so the
receive guard and the row converter need no plumbing) and released when the
response is sent.
"""

from __future__ import annotations

import contextvars
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from producer.errors import UploadTooLarge
from producer.metrics import SPOOL_BYTES, UPLOADS_IN_PROGRESS, UPLOADS_REFUSED_BUSY
from uploads.errors import UploadError

KIB = 1024
MIB = 1024**2
GIB = 1024**3
#: Seconds a client told 429 should wait before it retries.
RETRY_AFTER_SECONDS = 5
#: Bodies may always take this much besides the ratio (a tiny file with a long header).
SPOOL_RATIO_SLACK_BYTES = MIB
UPLOAD_PATHS = ("/upload", "/submit/")
T = TypeVar("T")


def human_bytes(count: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if count >= size:
            return f"{count / size:.4g} {unit}"
    return f"{int(count)} bytes"


@dataclass(frozen=True)
class RowLimits:
    """What one upload's rows may take; see `ProducerSettings` for the settings behind each."""

    max_columns: int = 10_000
    max_header_bytes: int = 64 * KIB
    max_message_bytes: int = 4 * MIB
    max_spool_ratio: float = 10.0

    def max_body_bytes(self, upload_bytes: int) -> int:
        return int(upload_bytes * self.max_spool_ratio) + SPOOL_RATIO_SLACK_BYTES


@dataclass(frozen=True)
class BodyPace:
    """How slowly an upload's body may arrive, so a slow sender cannot hold an upload slot for long.

    `idle_timeout_seconds` (`PRODUCER_BODY_TIMEOUT_SECONDS`): the longest wait for the next chunk.
    `deadline_seconds` (`PRODUCER_BODY_DEADLINE_SECONDS`): the whole body, however fast it trickles.
    `min_bytes_per_second` (`PRODUCER_MIN_BODY_BYTES_PER_SECOND`): the average rate the body must keep
    once the first `idle_timeout_seconds` have passed (a grace for slow starts and small files).
    """

    idle_timeout_seconds: float = 30.0
    deadline_seconds: float = 1800.0
    min_bytes_per_second: float = 16 * KIB

    def wait_allowed(self, elapsed: float, received: int) -> tuple[float, str]:
        """How long the next chunk may take to arrive, and which limit that is (for the 408's message)."""
        behind = (
            self.idle_timeout_seconds + received / self.min_bytes_per_second - elapsed
            if self.min_bytes_per_second
            else float("inf")
        )
        limits = (
            (
                self.idle_timeout_seconds,
                f"it stalled, no data for {self.idle_timeout_seconds:g} s (PRODUCER_BODY_TIMEOUT_SECONDS)",
            ),
            (
                self.deadline_seconds - elapsed,
                f"it was not complete after {self.deadline_seconds:g} s (PRODUCER_BODY_DEADLINE_SECONDS)",
            ),
            (
                behind,
                f"it came slower than {human_bytes(self.min_bytes_per_second)}/s on average "
                "(PRODUCER_MIN_BODY_BYTES_PER_SECOND)",
            ),
        )
        return min(limits, key=lambda limit: limit[0])  # a tie goes to the first: the plain stall


class Busy(UploadError):
    """The producer is at its concurrency or spool limit: 429, retry later."""

    status = 429

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        UPLOADS_REFUSED_BUSY.inc()


class Ticket:
    """One admitted upload's share of the spool budget."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.charged = 0

    def charge(self, count: int) -> None:
        """Count `count` more spooled bytes; raises Busy when the total would pass the limit."""
        self.admission.charge(self, count)


_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("upload_ticket", default=None)


def charge_spool(count: int) -> None:
    """Charge `count` spooled bytes to the current request's ticket (no ticket: not an admitted upload)."""
    ticket = _TICKET.get()
    if ticket is not None:
        ticket.charge(count)


class Admission:
    """The shared limits: uploads in flight and spooled bytes. Thread-safe (rows are converted in threads)."""

    def __init__(self, max_concurrent_uploads: int, max_spool_bytes: int) -> None:
        self.max_concurrent_uploads = max_concurrent_uploads
        self.max_spool_bytes = max_spool_bytes
        self.active = 0
        self.spooled = 0
        self._lock = threading.Lock()

    def admit(self, declared_bytes: int) -> Ticket:
        with self._lock:
            if self.active >= self.max_concurrent_uploads:
                raise Busy(
                    f"{self.active} uploads are in progress, the limit is {self.max_concurrent_uploads} "
                    f"(PRODUCER_MAX_CONCURRENT_UPLOADS); retry in {RETRY_AFTER_SECONDS} s"
                )
            # A declared size over the whole budget is the upload limit's business (413), not a reason to wait.
            if declared_bytes <= self.max_spool_bytes < self.spooled + declared_bytes:
                raise Busy(self._full_message())
            self.active += 1
            UPLOADS_IN_PROGRESS.set(self.active)
            return Ticket(self)

    def charge(self, ticket: Ticket, count: int) -> None:
        with self._lock:
            if ticket.charged + count > self.max_spool_bytes:
                raise UploadTooLarge(
                    f"this upload alone needs more than the producer's whole spool of "
                    f"{human_bytes(self.max_spool_bytes)} (PRODUCER_MAX_SPOOL_BYTES); split the file; nothing was queued",
                )
            if self.spooled + count > self.max_spool_bytes:
                raise Busy(self._full_message())
            self.spooled += count
            ticket.charged += count
            SPOOL_BYTES.set(self.spooled)

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            self.active -= 1
            self.spooled -= ticket.charged
            ticket.charged = 0
            UPLOADS_IN_PROGRESS.set(self.active)
            SPOOL_BYTES.set(self.spooled)

    def _full_message(self) -> str:
        return (
            f"the producer's spool is full ({human_bytes(self.spooled)} of {human_bytes(self.max_spool_bytes)}, "
            f"PRODUCER_MAX_SPOOL_BYTES); nothing was queued, retry in {RETRY_AFTER_SECONDS} s"
        )


class AdmissionMiddleware:
    """Admits upload requests (POST /upload, /submit/...) within the shared limits, else 429 + Retry-After."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(UPLOAD_PATHS):
            await self.app(scope, receive, send)
            return
        try:
            ticket = self.admission.admit(_declared_length(scope))
        except Busy as busy:
            await _refuse(send, busy)
            return
        token = _TICKET.set(ticket)
        try:
            await self.app(scope, receive, send)
        finally:
            _TICKET.reset(token)
            self.admission.release(ticket)


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return max(int(value), 0)
            except ValueError:
                return 0
    return 0


async def _refuse(send: Send, busy: Busy) -> None:
    body = json.dumps(busy.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in busy.headers.items()]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class WorkThreads:
    """Runs uploads' CPU-bound steps on at most `count` threads at once (the rest wait their turn)."""

    def __init__(self, count: int) -> None:
        self.limiter = CapacityLimiter(count)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=self.limiter)
