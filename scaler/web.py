"""The scaler's HTTP side: dashboard, status API, live stream, worker logs, metrics, health.

Starlette-shaped: endpoints are module-level functions that find the control
loop in `request.app.state.scaler`; errors are named `AutoscalerError`s mapped
to `{"error": ...}` with their status once, by the handler both apps share
(`common.error_responses`). Reads live here;
the writes (pause, resume, drain, retry) are in `scaler.control_routes`. Uploads and
upload records (`/api/upload`, `/api/uploads...`) pass through to the producer
(`scaler.producer_proxy`). Every path sits behind `common.auth.AuthMiddleware`
(the producer's rule, with its login form, login link and logout); `/healthz`
gives its reasons only to an authenticated caller.
"""

from __future__ import annotations

import asyncio
import json
import math
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

from common.auth import SESSION_EXPIRES, AuthMiddleware, AuthSettings
from common.error_responses import EXCEPTION_HANDLERS
from common.errors import BadRequest
from common.health_view import visible_health
from scaler import control_routes, producer_proxy
from scaler.health import HealthCheck
from scaler.loop import Scaler
from scaler.settings import ScalerSettings

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
MAX_LOG_LINES = 5000


async def index(request: Request) -> Response:
    return FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    """503 when a thread is stuck; the problems' texts only for an authenticated caller."""
    healthy, document = request.app.state.health.report()
    parts = {name: document[name]["problem"] is None for name in ("control_loop", "worker_channel")}
    return JSONResponse(visible_health(request.scope, document, parts), status_code=200 if healthy else 503)


async def status(request: Request) -> Response:
    return JSONResponse(request.app.state.scaler.board.document())


async def history(request: Request) -> Response:
    """`?window=300|3600|21600`: that many seconds of every type's charts (`scaler.history`); 400 for another."""
    store = request.app.state.scaler.board.history
    return JSONResponse(store.window(store.parse_window(request.query_params.get("window")), time.time()))


async def stream(request: Request) -> Response:
    """Status documents as server-sent events; a browser's stream ends with its session (it must log in again)."""
    board = request.app.state.scaler.board
    ends = request.scope.get(SESSION_EXPIRES, math.inf)

    async def events() -> AsyncIterator[dict[str, str]]:
        seen = -1
        while time.time() < ends:
            if board.tick_number != seen:
                seen = board.tick_number
                yield {"event": "status", "data": json.dumps(board.document())}
            await asyncio.sleep(0.2)

    return EventSourceResponse(events(), ping=15)


async def worker_log(request: Request) -> Response:
    worker_id = request.path_params["worker_id"]
    try:
        lines = min(max(int(request.query_params.get("lines", "200")), 1), MAX_LOG_LINES)
    except ValueError:
        raise BadRequest("lines must be a whole number") from None
    text = await run_in_threadpool(request.app.state.scaler.backend.read_log, worker_id, lines)
    return PlainTextResponse(text)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/", index),
    Route("/healthz", healthz),
    Route("/metrics", metrics),
    Route("/api/status", status),
    Route("/api/history", history),
    Route("/api/stream", stream),
    Route("/api/workers/{worker_id}/log", worker_log),
    *control_routes.ROUTES,
    *producer_proxy.ROUTES,
    Mount("/static", app=StaticFiles(directory=DASHBOARD), name="static"),
]


def create_app(scaler: Scaler, settings: ScalerSettings | None = None, auth: AuthSettings | None = None) -> Starlette:
    auth = auth or AuthSettings.from_environment()
    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS)
    app.state.scaler = scaler
    app.state.health = HealthCheck(scaler)
    app.state.settings = settings or scaler.settings
    app.state.producer_url = app.state.settings.producer_url
    app.state.producer_token = auth.token
    app.add_middleware(AuthMiddleware, settings=auth)
    return app
