"""HTTP routes of the producer: uploads, job types, health and metrics.

Before a route runs, `AuthMiddleware` decides who may call (token, session
cookie, or loopback; never cross-site) and `AdmissionMiddleware` whether
there is room (uploads in flight, spooled bytes). An upload then goes through
three steps, each of which can refuse it: where (job type), what (the body,
spooled to disk within size and time limits, then checked completely within
the row limits and converted to JSON bodies), and finally publishing
with confirms. Only the last step touches the broker, so every refusal before
it leaves the queue untouched; the last step answers 200 only when the broker
confirmed every row, else 503 with the confirmed count.
"""

from __future__ import annotations

import csv
import logging
import re
import tempfile
import time
import uuid
from contextlib import ExitStack
from typing import Any, BinaryIO

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobtypes.auth import AuthMiddleware
from jobtypes.config import JOB_TYPE_NAME, JobType
from jobtypes.config_watch import ConfigWatcher
from jobtypes.settings import jobs_config_path
from producer.body import RAW_CSV_TYPES, GuardedReceive, check_declared_length, media_type, spool_raw_body
from producer.csv_rows import ConvertedUpload, check_encoding, convert_rows
from producer.errors import UploadError
from producer.health import BrokerHealth, healthz, lifespan, livez, readyz
from producer.limits import Admission, AdmissionMiddleware, RowLimits, WorkThreads
from producer.metrics import ROWS_PUBLISHED, UPLOAD_SECONDS, UPLOADS
from producer.publisher import publish_rows
from producer.settings import ProducerSettings

log = logging.getLogger("producer")


class Producer:
    """The producer's state: settings and the followed config."""

    def __init__(self, settings: ProducerSettings, config: ConfigWatcher) -> None:
        self.settings = settings
        self.config = config
        self.work = WorkThreads(settings.work_threads)
        csv.field_size_limit(settings.max_field_bytes)

    # where -------------------------------------------------------------------
    def job_type(self, name: str | None) -> JobType:
        self.config.refresh()
        config = self.config.config
        if name is None or name == "":
            return config.job_types[config.default]
        if not JOB_TYPE_NAME.match(name):
            raise UploadError(
                400, f"{name[:80]!r} is not a job type name (lower-case letters, digits and '-'); see GET /job-types"
            )
        job_type = config.get(name)
        if job_type is None:
            raise UploadError(404, f"unknown job type {name!r}; known types: {', '.join(config.job_types)}")
        return job_type

    # what --------------------------------------------------------------------
    async def receive_file(self, request: Request, spool: BinaryIO, multipart_only: bool) -> str | None:
        """Spool the uploaded CSV into `spool`; returns the form's job_type field, if any."""
        kind = media_type(request)
        if kind == "multipart/form-data":
            return await self._receive_form(request, spool)
        if multipart_only or kind not in RAW_CSV_TYPES:
            accepted = "multipart/form-data" if multipart_only else "multipart/form-data or text/csv"
            raise UploadError(415, f"content type {kind!r} is not accepted here; send {accepted}")
        await spool_raw_body(request, spool)
        return None

    async def _receive_form(self, request: Request, spool: BinaryIO) -> str | None:
        try:
            form = await request.form(max_files=2, max_fields=20, max_part_size=64 * 1024)
        except MultiPartException as error:
            raise UploadError(400, f"malformed multipart form: {error}") from error
        try:
            files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
            if not files:
                raise UploadError(400, "no file: send the CSV as the multipart field 'file' (curl -F file=@data.csv)")
            if len(files) > 1:
                raise UploadError(400, "two files in the field 'file': upload one CSV file per request")
            other_files = [key for key, value in form.multi_items() if isinstance(value, UploadFile) and key != "file"]
            if other_files:
                raise UploadError(400, f"unexpected file field {other_files[0]!r}: only 'file' is read")
            await run_in_threadpool(_copy, files[0].file, spool)
            job_type = form.get("job_type")
            return job_type if isinstance(job_type, str) else None
        finally:
            await form.close()


def _copy(source: BinaryIO, sink: BinaryIO) -> None:
    source.seek(0)
    while chunk := source.read(1024 * 1024):
        sink.write(chunk)


def _error(error: UploadError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _handle_upload(request: Request, path_type: str | None) -> Response:
    producer: Producer = request.app.state.producer
    settings = producer.settings
    started = time.perf_counter()
    upload_id = uuid.uuid4().hex
    job_name = path_type or "?"
    try:
        job_type = producer.job_type(path_type) if path_type is not None else None
        check_declared_length(request, settings.max_upload_bytes)
        guarded = Request(
            request.scope, GuardedReceive(request.receive, settings.max_upload_bytes, settings.body_timeout_seconds)
        )
        with ExitStack() as stack:
            spool = stack.enter_context(tempfile.TemporaryFile(dir=settings.spool_dir, prefix="upload-"))
            form_type = await producer.receive_file(guarded, spool, multipart_only=path_type is None)
            if job_type is None:
                job_type = producer.job_type(form_type)
            job_name = job_type.name
            bodies = stack.enter_context(tempfile.TemporaryFile(dir=settings.spool_dir, prefix="rows-"))
            received = time.perf_counter()
            converted = await producer.work.run(_check_and_convert, spool, bodies, settings.rows, job_type)
            bodies.seek(0)
            checked = time.perf_counter()
            result = await producer.work.run(publish_rows, job_type, upload_id, bodies, settings.publish_window)
    except UploadError as error:
        UPLOADS.labels("rejected").inc()
        log.info("upload %s type=%s rejected status=%d: %s", upload_id, job_name, error.status, error.message)
        return _error(error)
    except ClientDisconnect:
        UPLOADS.labels("rejected").inc()
        log.info(
            "upload %s type=%s abandoned: the client disconnected before the body ended; nothing queued",
            upload_id,
            job_name,
        )
        return _error(UploadError(400, "the request body ended early; nothing was queued"))
    seconds = time.perf_counter() - started
    ROWS_PUBLISHED.labels(job_type.name).inc(result.confirmed)
    if result.error is not None:
        UPLOADS.labels("broker_error").inc()
        log.error(
            "upload %s type=%s rows=%d confirmed=%d seconds=%.2f failed: %s",
            upload_id,
            job_type.name,
            converted.rows,
            result.confirmed,
            seconds,
            result.error,
        )
        body: dict[str, Any] = {
            "error": f"{result.error}; {result.confirmed} of {converted.rows} rows were confirmed before the failure",
            "upload_id": upload_id,
            "job_type": job_type.name,
            "queue": job_type.queue,
            "rows": converted.rows,
            "confirmed": result.confirmed,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    UPLOADS.labels("ok").inc()
    UPLOAD_SECONDS.observe(seconds)
    log.info(
        "upload %s type=%s queue=%s rows=%d seconds=%.2f (receive %.2f, check %.2f, publish %.2f) rows_per_s=%.0f",
        upload_id,
        job_type.name,
        job_type.queue,
        converted.rows,
        seconds,
        received - started,
        checked - received,
        time.perf_counter() - checked,
        converted.rows / max(seconds, 1e-6),
    )
    return JSONResponse(
        {"upload_id": upload_id, "job_type": job_type.name, "queue": job_type.queue, "rows": converted.rows}
    )


def _check_and_convert(spool: BinaryIO, bodies: BinaryIO, limits: RowLimits, job_type: JobType) -> ConvertedUpload:
    spool.seek(0)
    check_encoding(spool)
    spool.seek(0)
    return convert_rows(spool, bodies, limits, job_type.columns)


async def upload(request: Request) -> Response:
    return await _handle_upload(request, None)


async def submit(request: Request) -> Response:
    return await _handle_upload(request, request.path_params["job_type"])


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


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def not_a_type(request: Request) -> Response:
    """`/submit/` with no or a multi-segment job type: say so instead of a bare 404."""
    raw = request.path_params.get("rest", "")
    return _error(UploadError(400 if re.search(r"[/\\.]", raw) else 404, f"{raw[:80]!r} is not a job type name"))


def create_app(settings: ProducerSettings | None = None, config: ConfigWatcher | None = None) -> Starlette:
    settings = settings or ProducerSettings.from_environment()
    app = Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/submit/{job_type}", submit, methods=["POST"]),
            Route("/submit/{rest:path}", not_a_type, methods=["POST"]),
            Route("/job-types", job_types, methods=["GET"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(AdmissionMiddleware, Admission(settings.max_concurrent_uploads, settings.max_spool_bytes))
    app.add_middleware(AuthMiddleware, settings=settings.auth)
    app.state.health = BrokerHealth(settings.health_interval_seconds)
    app.state.producer = Producer(settings, config or ConfigWatcher(jobs_config_path()))
    return app
