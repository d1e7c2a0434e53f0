"""HTTP routes of the producer: uploads and their records, job types, health and metrics.

Before a route runs, `AuthMiddleware` decides who may call (token or session
cookie, loopback only when opted in; never cross-site) and `AdmissionMiddleware` whether
there is room (uploads in flight, spooled bytes). Endpoints are thin: the
upload service (producer/upload_service.py) does the work of upload, submit,
replay and cancel, and raises named errors (`producer.errors`) that the
handler both apps share (`common.error_responses`) turns into
`{"error": ...}` with the error's status. The upload tracker (a thread
applying workers' outcome reports to the record) runs as long as the app.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from common.auth import AuthMiddleware
from common.config_watch import ConfigWatcher
from common.error_responses import EXCEPTION_HANDLERS
from common.errors import UnknownJobType
from common.health_view import visible_health
from common.settings import jobs_config_path
from producer import health
from producer.errors import MalformedUpload
from producer.limits import Admission, AdmissionMiddleware, WorkThreads
from producer.orphans import OrphanWatch
from producer.settings import ProducerSettings
from producer.upload_service import UploadService
from uploads.backends import open_store
from uploads.tracker import Tracker, TrackerState

log = logging.getLogger("producer")
MAX_LIST_LIMIT = 500
#: The upload tracker's states that count as healthy (see `uploads.tracker`).
TRACKER_HEALTHY_STATES = frozenset({TrackerState.STARTING, TrackerState.CONSUMING})


class Producer:
    """The producer's state: settings, the followed config and the upload service."""

    def __init__(self, settings: ProducerSettings, config: ConfigWatcher, uploads: UploadService) -> None:
        self.settings = settings
        self.config = config
        self.uploads = uploads


def _uploads(request: Request) -> UploadService:
    return request.app.state.producer.uploads


async def upload(request: Request) -> Response:
    return JSONResponse(await _uploads(request).upload(request, None))


async def submit(request: Request) -> Response:
    return JSONResponse(await _uploads(request).upload(request, request.path_params["job_type"]))


async def list_uploads(request: Request) -> Response:
    query = request.query_params
    try:
        limit = min(max(int(query.get("limit", "50")), 1), MAX_LIST_LIMIT)
    except ValueError as error:
        raise MalformedUpload(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}") from error
    service = _uploads(request)
    return JSONResponse(await run_in_threadpool(service.recent, query.get("job_type"), query.get("state"), limit))


async def get_upload(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_uploads(request).record, request.path_params["upload_id"]))


async def failed_rows(request: Request) -> Response:
    upload_id = request.path_params["upload_id"]
    chunks = await run_in_threadpool(_uploads(request).failed_rows, upload_id)
    disposition = f'attachment; filename="failed-rows-{upload_id[:64]}.csv"'
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition})


async def replay(request: Request) -> Response:
    return JSONResponse(await _uploads(request).replay(request.path_params["upload_id"]))


async def cancel(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_uploads(request).cancel, request.path_params["upload_id"]))


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
    """The readiness document and the upload tracker's state; 503 naming the tracker when it stopped counting.
    Without the token only ok/failing per part."""
    tracker = _uploads(request).tracker_status()
    status, document = health.healthz_document(request.app.state.health.document(), tracker)
    parts = request.app.state.health.parts()
    if tracker is not None:
        parts["upload_tracker"] = tracker["state"] in TRACKER_HEALTHY_STATES and not tracker["problem"]
    return JSONResponse(visible_health(request.scope, document, parts), status_code=status)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def not_a_type(request: Request) -> Response:
    """`/submit/` with no or a multi-segment job type: say so instead of a bare 404."""
    raw = request.path_params.get("rest", "")
    message = f"{raw[:80]!r} is not a job type name"
    raise MalformedUpload(message) if re.search(r"[/\\.]", raw) else UnknownJobType(message)


ROUTES = [
    Route("/upload", upload, methods=["POST"]),
    Route("/submit/{job_type}", submit, methods=["POST"]),
    Route("/submit/{rest:path}", not_a_type, methods=["POST"]),
    Route("/uploads", list_uploads, methods=["GET"]),
    Route("/uploads/{upload_id}", get_upload, methods=["GET"]),
    Route("/uploads/{upload_id}/failed-rows.csv", failed_rows, methods=["GET"]),
    Route("/uploads/{upload_id}/replay", replay, methods=["POST"]),
    Route("/uploads/{upload_id}/cancel", cancel, methods=["POST"]),
    Route("/job-types", job_types, methods=["GET"]),
    Route("/livez", health.livez, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Broker health checks and the upload tracker run for as long as the app serves."""
    service: UploadService = app.state.producer.uploads
    async with health.lifespan(app):
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)


def create_app(settings: ProducerSettings | None = None, config: ConfigWatcher | None = None) -> Starlette:
    """The producer app; raises StoreUnavailable when the upload store cannot be opened."""
    settings = settings or ProducerSettings.from_environment()
    config = config or ConfigWatcher(jobs_config_path())
    store = open_store(settings.uploads)
    tracker = Tracker(store, settings.uploads) if settings.uploads.tracker else None
    orphans = OrphanWatch(config)
    service = UploadService(settings, config, store, tracker, WorkThreads(settings.work_threads), orphans)
    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.add_middleware(AdmissionMiddleware, Admission(settings.max_concurrent_uploads, settings.max_spool_bytes))
    app.add_middleware(AuthMiddleware, settings=settings.auth)
    app.state.health = health.BrokerHealth(settings.health_interval_seconds, orphans)
    app.state.producer = Producer(settings, config, service)
    return app
