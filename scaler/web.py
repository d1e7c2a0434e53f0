"""The scaler's HTTP side: dashboard, status API, live stream, worker logs, metrics, health.

Read-only by design: nothing here changes what the scaler does. Uploads and
upload records (`/api/upload`, `/api/uploads...`) pass through to the producer
(scaler.producer_proxy). Every path sits behind `jobtypes.auth.AuthMiddleware`
(the producer's rule, with its `/login` form); the pass-through forwards the
caller only after that check, with the scaler's own token and a `Forwarded`
header, so a remote caller never looks like a loopback client to the producer.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobtypes.auth import AuthMiddleware, AuthSettings
from jobtypes.errors import AutoscalerError
from scaler import producer_proxy
from scaler.loop import Scaler

DASHBOARD = Path(__file__).resolve().parent / "dashboard"


def create_app(scaler: Scaler, producer_url: str | None = None, auth: AuthSettings | None = None) -> Starlette:
    producer_url = (producer_url or os.environ.get("PRODUCER_URL", "http://127.0.0.1:8000")).rstrip("/")
    auth = auth or AuthSettings.from_environment()

    async def index(request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(request: Request) -> Response:
        age = max(0.0, time.time() - scaler.last_at) if scaler.last_at else None
        return JSONResponse({"status": "ok", "last_tick_age_seconds": age, "leader": scaler.is_leader()})

    async def status(request: Request) -> Response:
        return JSONResponse(scaler.board.document())

    async def history(request: Request) -> Response:
        return JSONResponse(scaler.board.history())

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[dict[str, str]]:
            seen = -1
            while True:
                if scaler.board.tick_number != seen:
                    seen = scaler.board.tick_number
                    yield {"event": "status", "data": json.dumps(scaler.board.document())}
                await asyncio.sleep(0.2)

        return EventSourceResponse(events(), ping=15)

    async def worker_log(request: Request) -> Response:
        worker_id = request.path_params["worker_id"]
        try:
            lines = min(max(int(request.query_params.get("lines", "200")), 1), 5000)
        except ValueError:
            return JSONResponse({"error": "lines must be a whole number"}, status_code=400)
        try:
            text = await run_in_threadpool(scaler.backend.read_log, worker_id, lines)
        except KeyError:
            return JSONResponse({"error": f"no log for worker {worker_id!r}"}, status_code=404)
        return PlainTextResponse(text)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        exception_handlers={AutoscalerError: lambda request, error: JSONResponse(error.body(), error.status)},
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/api/status", status),
            Route("/api/history", history),
            Route("/api/stream", stream),
            Route("/api/workers/{worker_id}/log", worker_log),
            *producer_proxy.ROUTES,
            Mount("/static", app=StaticFiles(directory=DASHBOARD), name="static"),
        ],
    )
    app.state.producer_url = producer_url
    app.state.producer_token = auth.token
    app.add_middleware(AuthMiddleware, settings=auth)
    return app
