"""The scaler's writes: pause, resume, drain and retry a job type (`POST /api/job-types/{name}/...`).

The auth middleware in front of the app has already checked the caller (the
producer's token, or loopback). Each endpoint checks that the type exists and changes the
`Controls` the control loop reads on its next tick; pause and drain are
persisted before they are acknowledged (see `scaler.operator_controls`), so a
200 means the setting survives a restart. Pause: no new workers, running
ones finish their row and stop, rows stay queued, uploads are still
accepted. Drain: the backlog is worked off, then the type holds at zero.
Resume: back to normal scaling. Retry: a failing type probes at once.
Errors are named `AutoscalerError`s; the app maps them to their status once.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.errors import UnknownJobType
from scaler.policy import Control


def _job_type(request: Request) -> str:
    name = request.path_params["name"]
    known = request.app.state.scaler.watcher.config.job_types
    if name not in known:
        raise UnknownJobType(f"unknown job type {name!r}; known: {', '.join(known)}")
    return name


async def _set(request: Request, control: Control) -> Response:
    name = _job_type(request)
    await run_in_threadpool(request.app.state.scaler.controls.set, name, control)
    return JSONResponse({"job_type": name, "control": control.value})


async def pause(request: Request) -> Response:
    return await _set(request, Control.PAUSED)


async def resume(request: Request) -> Response:
    return await _set(request, Control.RUN)


async def drain(request: Request) -> Response:
    return await _set(request, Control.DRAIN)


async def retry(request: Request) -> Response:
    name = _job_type(request)
    request.app.state.scaler.controls.retry(name)
    return JSONResponse({"job_type": name, "retry": True})


ROUTES = [
    Route("/api/job-types/{name}/pause", pause, methods=["POST"]),
    Route("/api/job-types/{name}/resume", resume, methods=["POST"]),
    Route("/api/job-types/{name}/drain", drain, methods=["POST"]),
    Route("/api/job-types/{name}/retry", retry, methods=["POST"]),
]
