"""Receive an upload's body safely: bounded in size and in how long it may stall.

Every byte passes through `GuardedReceive`, for raw bodies and multipart forms
alike, so an oversize upload is refused with 413 as soon as it crosses the
limit (whatever its Content-Length claimed) and a client that stops sending
mid-body gets 408 instead of holding a worker forever. Every byte received
is charged to the upload's share of the spool budget (`producer.limits`).
Raw bodies are accepted only as `text/csv`, so a browser cannot send one
cross-site without a preflight. Nothing is published
until the whole body has arrived and been checked, so either refusal leaves
the queue untouched.
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

from starlette.requests import Request
from starlette.types import Message, Receive

from producer.errors import UploadError
from producer.limits import charge_spool, human_bytes

#: Raw bodies must say they are CSV. `text/plain` and form encodings are what a
#: web page may send cross-site without a preflight, so they are refused here.
RAW_CSV_TYPES = frozenset({"text/csv"})


class GuardedReceive:
    """An ASGI receive callable that enforces a byte limit and an idle timeout."""

    def __init__(self, receive: Receive, max_bytes: int, idle_timeout: float) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.received = 0

    async def __call__(self) -> Message:
        try:
            message = await asyncio.wait_for(self._receive(), self.idle_timeout)
        except TimeoutError as error:
            raise UploadError(
                408,
                f"the upload stalled: no data for {self.idle_timeout:g} s after {self.received} bytes; nothing was queued",
            ) from error
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.received += size
            charge_spool(size)
            if self.received > self.max_bytes:
                raise UploadError(
                    413,
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
        raise UploadError(400, f"Content-Length {declared!r} is not a number") from error
    if length > max_bytes:
        raise UploadError(
            413,
            f"the upload declares {human_bytes(length)}, more than the limit of {human_bytes(max_bytes)} "
            "(PRODUCER_MAX_UPLOAD_BYTES); nothing was queued",
        )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def spool_raw_body(request: Request, sink: BinaryIO) -> None:
    """Copy a raw (non-multipart) CSV body into `sink`, chunk by chunk."""
    async for chunk in request.stream():
        sink.write(chunk)
