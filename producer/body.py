"""Receive an upload's body safely: bounded in size, in how long it may stall and how long it may take.

Every byte passes through `GuardedReceive`, for raw bodies and multipart forms
alike, so an oversize upload is refused with 413 as soon as it crosses the
limit (whatever its Content-Length claimed), and a client that stops sending
mid-body, trickles below the minimum rate or passes the overall deadline
(`producer.limits.BodyPace`) gets 408 instead of holding an upload slot. Every byte received
is charged to the upload's share of the spool budget (`producer.limits`).
Raw bodies are accepted only as `text/csv`, so a browser cannot send one
cross-site without a preflight. Nothing is published
until the whole body has arrived and been checked, so either refusal leaves
the queue untouched.
"""

from __future__ import annotations

import asyncio
import time
from typing import BinaryIO

from starlette.requests import Request
from starlette.types import Message, Receive

from producer.errors import MalformedUpload, UploadCutOff, UploadTooLarge
from producer.limits import BodyPace, charge_spool, human_bytes

#: Raw bodies must say they are CSV. `text/plain` and form encodings are what a
#: web page may send cross-site without a preflight, so they are refused here.
RAW_CSV_TYPES = frozenset({"text/csv"})


class GuardedReceive:
    """An ASGI receive callable that enforces a byte limit, an idle timeout, a minimum rate and a deadline.

    Each wait for the next chunk is bounded by whichever of the three time
    limits comes first, so a slow sender is cut off at that moment, not at
    its next chunk.
    """

    def __init__(self, receive: Receive, max_bytes: int, pace: BodyPace) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.pace = pace
        self.received = 0
        self.started = time.monotonic()

    async def __call__(self) -> Message:
        elapsed = time.monotonic() - self.started
        allowed, limit = self.pace.wait_allowed(elapsed, self.received)
        try:
            message = await asyncio.wait_for(self._receive(), max(allowed, 0.0))
        except TimeoutError as error:
            raise UploadCutOff(
                f"the upload was cut off: {limit}; {self.received} bytes arrived in {time.monotonic() - self.started:.0f} s; "
                "nothing was queued",
            ) from error
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.received += size
            charge_spool(size)
            if self.received > self.max_bytes:
                raise UploadTooLarge(
                    f"the upload is larger than the limit of {human_bytes(self.max_bytes)} "
                    "(PRODUCER_MAX_UPLOAD_BYTES); nothing was queued",
                )
        return message


def check_declared_length(request: Request, max_bytes: int) -> None:
    """Refuse at once a body whose declared Content-Length is over the limit."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError as error:
        raise MalformedUpload(f"Content-Length {declared!r} is not a number") from error
    if length > max_bytes:
        raise UploadTooLarge(
            f"the upload declares {human_bytes(length)}, more than the limit of {human_bytes(max_bytes)} "
            "(PRODUCER_MAX_UPLOAD_BYTES); nothing was queued",
        )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def spool_raw_body(request: Request, sink: BinaryIO) -> None:
    """Copy a raw (non-multipart) CSV body into `sink`, chunk by chunk."""
    async for chunk in request.stream():
        sink.write(chunk)
