"""HTTP routes of the producer: uploads and their records, job types, health and metrics.

Endpoints are thin: the upload service (producer/upload_service.py) does the
work for upload, submit, replay and cancel, and raises named errors that one
exception handler turns into `{"error": ...}` with the error's status. The
upload tracker (a thread applying workers' outcome reports to the record)
runs for as long as the app does.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator

import pika
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jobtypes.config_watch import ConfigWatcher
from jobtypes.errors import AutoscalerError
from jobtypes.settings import connection_parameters, jobs_config_path
from producer.errors import UploadError
from producer.settings import ProducerSettings
from producer.upload_service import UploadService
from uploads.backends import open_store
from uploads.metrics import watch_in_progress
from uploads.tracker import Tracker

log = logging.getLogger("producer")
HEALTH_CACHE_SECONDS = 2.0
MAX_LIST_LIMIT = 500


class Producer:
    """The producer's state: settings, the followed config, the upload service, a cached broker health."""

    def __init__(self, settings: ProducerSettings, config: ConfigWatcher, uploads: UploadService) -> None:
        self.settings = settings
        self.config = config
        self.uploads = uploads
        self._health: tuple[float, bool, str | None] = (0.0, False, None)

    # who -----------------------------------------------------------------------
    def check_token(self, request: Request) -> None:
        if self.settings.token is None:
            return
        supplied = request.headers.get("authorization", "")
        scheme, _, token = supplied.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.settings.token.encode()):
            raise UploadError(401, "missing or wrong token: send 'Authorization: Bearer <PRODUCER_TOKEN>'")

    # health ------------------------------------------------------------------
    def broker_health(self) -> tuple[bool, str | None]:
        checked_at, reachable, error = self._health
        if time.monotonic() - checked_at < HEALTH_CACHE_SECONDS:
            return reachable, error
        try:
            pika.BlockingConnection(connection_parameters("producer-healthz")).close()
            reachable, error = True, None
        except pika.exceptions.AMQPError as failure:
            reachable, error = False, f"{type(failure).__name__}: {failure}"[:200]
        self._health = (time.monotonic(), reachable, error)
        return reachable, error


def _producer(request: Request) -> Producer:
    return request.app.state.producer


async def error_response(request: Request, error: Exception) -> Response:
    """Every named error, raised anywhere under an endpoint, as `{"error": ...}` with its status."""
    assert isinstance(error, AutoscalerError)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    if error.status == 503:
        headers = {"Retry-After": "5"}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def upload(request: Request) -> Response:
    _producer(request).check_token(request)
    return JSONResponse(await _producer(request).uploads.upload(request, None))


async def submit(request: Request) -> Response:
    _producer(request).check_token(request)
    return JSONResponse(await _producer(request).uploads.upload(request, request.path_params["job_type"]))


async def list_uploads(request: Request) -> Response:
    query = request.query_params
    try:
        limit = min(max(int(query.get("limit", "50")), 1), MAX_LIST_LIMIT)
    except ValueError as error:
        raise UploadError(400, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}") from error
    service = _producer(request).uploads
    return JSONResponse(await run_in_threadpool(service.recent, query.get("job_type"), query.get("state"), limit))


async def get_upload(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_producer(request).uploads.record, request.path_params["upload_id"]))


async def failed_rows(request: Request) -> Response:
    upload_id = request.path_params["upload_id"]
    chunks = await run_in_threadpool(_producer(request).uploads.failed_rows, upload_id)
    disposition = f'attachment; filename="failed-rows-{upload_id[:64]}.csv"'
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition})


async def replay(request: Request) -> Response:
    _producer(request).check_token(request)
    return JSONResponse(await run_in_threadpool(_producer(request).uploads.replay, request.path_params["upload_id"]))


async def cancel(request: Request) -> Response:
    _producer(request).check_token(request)
    return JSONResponse(await run_in_threadpool(_producer(request).uploads.cancel, request.path_params["upload_id"]))


async def job_types(request: Request) -> Response:
    watcher: ConfigWatcher = request.app.state.producer.config
    watcher.refresh()
    config = watcher.config
    return JSONResponse(
        {
            "default": config.default,
            "job_types": {
                name: {"queue": job.queue, "description": job.description} for name, job in config.job_types.items()
            },
            "config_error": watcher.error,
        }
    )


async def healthz(request: Request) -> Response:
    producer = _producer(request)
    reachable, error = await run_in_threadpool(producer.broker_health)
    tracker = producer.uploads.tracker
    return JSONResponse(
        {
            "status": "ok",
            "broker": {"reachable": reachable, "error": error},
            "upload_tracker": tracker.status() if tracker is not None else None,
        }
    )


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def not_a_type(request: Request) -> Response:
    """`/submit/` with no or a multi-segment job type: say so instead of a bare 404."""
    raw = request.path_params.get("rest", "")
    raise UploadError(400 if re.search(r"[/\\.]", raw) else 404, f"{raw[:80]!r} is not a job type name")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Run the upload tracker for as long as the app serves."""
    service: UploadService = app.state.producer.uploads
    if service.tracker is not None:
        service.tracker.start()
    try:
        yield
    finally:
        if service.tracker is not None:
            await run_in_threadpool(service.tracker.stop)
        service.store.close()


def create_app(settings: ProducerSettings | None = None, config: ConfigWatcher | None = None) -> Starlette:
    """The producer app; raises StoreUnavailable when the upload store cannot be opened."""
    settings = settings or ProducerSettings.from_environment()
    config = config or ConfigWatcher(jobs_config_path())
    store = open_store(settings.uploads)
    watch_in_progress(store)
    service = UploadService(settings, config, store, Tracker(store, settings.uploads))
    app = Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/submit/{job_type}", submit, methods=["POST"]),
            Route("/submit/{rest:path}", not_a_type, methods=["POST"]),
            Route("/uploads", list_uploads, methods=["GET"]),
            Route("/uploads/{upload_id}", get_upload, methods=["GET"]),
            Route("/uploads/{upload_id}/failed-rows.csv", failed_rows, methods=["GET"]),
            Route("/uploads/{upload_id}/replay", replay, methods=["POST"]),
            Route("/uploads/{upload_id}/cancel", cancel, methods=["POST"]),
            Route("/job-types", job_types, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={AutoscalerError: error_response},
        lifespan=lifespan,
    )
    app.state.producer = Producer(settings, config, service)
    return app
