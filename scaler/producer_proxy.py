"""The dashboard's way to the producer: uploads and upload records, passed through on the scaler's own origin.

The dashboard talks only to the scaler (one origin, one port-forward in a
cluster); these routes forward to the producer at `app.state.producer_url`
and hand its answer back unchanged. The caller passed the scaler's own
authentication first; the request goes on with the scaler's token
(`app.state.producer_token`) and a `Forwarded` header, so a remote caller
never looks like a loopback client to the producer. An unreachable producer
is a 502 that says so.
"""

from __future__ import annotations

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from common.auth import forwarded_headers
from common.errors import AutoscalerError

FORWARDED_HEADERS = ("content-type", "content-length", "idempotency-key")
TIMEOUT = httpx.Timeout(600, connect=5)


class ProducerUnreachable(AutoscalerError):
    status = 502


def _target(request: Request, path: str) -> str:
    query = request.url.query
    return f"{request.app.state.producer_url}{path}" + (f"?{query}" if query else "")


async def _forward(request: Request, path: str) -> Response:
    """Send the request on to the producer's `path`; its answer comes back streamed, status and type kept."""
    headers = {name: value for name, value in request.headers.items() if name in FORWARDED_HEADERS}
    headers.update(forwarded_headers(request.scope, request.app.state.producer_token))
    client = httpx.AsyncClient(timeout=TIMEOUT)
    body = request.stream() if request.method == "POST" else None
    try:
        outgoing = client.build_request(request.method, _target(request, path), content=body, headers=headers)
        answer = await client.send(outgoing, stream=True)
    except httpx.HTTPError as error:
        await client.aclose()
        raise ProducerUnreachable(f"the producer at {request.app.state.producer_url} is unreachable: {error}") from None
    passed = {name: answer.headers[name] for name in ("content-disposition", "retry-after") if name in answer.headers}
    return StreamingResponse(
        answer.aiter_raw(),
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type"),
        headers=passed,
        background=BackgroundTask(_close, answer, client),
    )


async def _close(answer: httpx.Response, client: httpx.AsyncClient) -> None:
    await answer.aclose()
    await client.aclose()


async def upload(request: Request) -> Response:
    return await _forward(request, "/upload")


async def uploads(request: Request) -> Response:
    return await _forward(request, "/uploads")


async def one_upload(request: Request) -> Response:
    """The record, its failed-row report, or replay and cancel: the same path under /uploads."""
    return await _forward(request, request.url.path.removeprefix("/api"))


ROUTES = [
    Route("/api/upload", upload, methods=["POST"]),
    Route("/api/uploads", uploads, methods=["GET"]),
    Route("/api/uploads/{upload_id}", one_upload, methods=["GET"]),
    Route("/api/uploads/{upload_id}/failed-rows.csv", one_upload, methods=["GET"]),
    Route("/api/uploads/{upload_id}/replay", one_upload, methods=["POST"]),
    Route("/api/uploads/{upload_id}/cancel", one_upload, methods=["POST"]),
]
