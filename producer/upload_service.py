"""The upload service: what upload, submit, replay and cancel do, whatever HTTP route calls them.

An upload goes through steps that can each refuse it: where (job type), what
(the body, spooled to disk within size and time limits, then checked
completely and converted to JSON bodies), the record (created in the upload
store, or found by its Idempotency-Key), and finally publishing with
confirms. Every refusal before publishing leaves the queue untouched; the
answer is 200 only when the broker confirmed every row, else 503 with the
confirmed count, which the record keeps too.

An Idempotency-Key makes a retry the same upload: the same record, the same
message ids, and only the rows after the confirmed count are published again
(rows just after it may already be in the queue, within the publish window;
the record counts each row once and handlers are idempotent by message id).

One request at a time publishes an upload, across every producer replica on
the store: it holds the upload's publishing lease (producer/leases.py), which
also stores the confirmed count as publishing advances and stops publishing
when the upload is cancelled on any replica.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from common.config import JOB_TYPE_NAME, JobType
from common.config_watch import ConfigWatcher
from common.errors import AutoscalerError, UnknownJobType
from producer.body import RAW_CSV_TYPES, GuardedReceive, check_declared_length, media_type, spool_raw_body
from producer.csv_rows import ConvertedUpload, check_encoding, convert_rows
from producer.errors import MalformedUpload, NotCsvText, PublishFailed
from producer.leases import CANCELLED, Leases, PublishLease
from producer.limits import WorkThreads
from producer.metrics import ROWS_PUBLISHED, UPLOAD_SECONDS, UPLOADS
from producer.orphans import OrphanWatch
from producer.row_publisher import PublishResult, file_rows, publish_rows
from producer.settings import ProducerSettings
from uploads.errors import StoreUnavailable, UploadCancelled
from uploads.failed_rows import failed_rows_csv
from uploads.model import STATES, UploadRecord, public
from uploads.store import UploadStore
from uploads.tracker import Tracker

log = logging.getLogger("producer")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
RAW_FILE_NAME = "(request body)"


@dataclass
class Received:
    job_type: str | None
    file_name: str


@dataclass
class Checked:
    converted: ConvertedUpload
    file_hash: str | None


class UploadService:
    def __init__(
        self,
        settings: ProducerSettings,
        config: ConfigWatcher,
        store: UploadStore,
        tracker: Tracker | None,
        work: WorkThreads,
        orphans: OrphanWatch,
    ) -> None:
        self.settings = settings
        self.config = config
        self.orphans = orphans
        self.store = store
        self.tracker = tracker
        self.work = work
        self.leases = Leases(store, settings.leases)
        csv.field_size_limit(settings.max_field_bytes)

    def start(self) -> None:
        if self.tracker is not None:
            self.tracker.start()
        self.leases.start()

    def stop(self) -> None:
        self.leases.stop()
        if self.tracker is not None:
            self.tracker.stop()
        self.store.close()

    def tracker_status(self) -> dict[str, Any] | None:
        return self.tracker.status() if self.tracker is not None else None

    # where ------------------------------------------------------------------------------
    def job_type(self, name: str | None) -> JobType:
        self.config.refresh()
        config = self.config.config
        if name is None or name == "":
            return config.job_types[config.default]
        if not JOB_TYPE_NAME.match(name):
            raise MalformedUpload(
                f"{name[:80]!r} is not a job type name (lower-case letters, digits and '-'); see GET /job-types"
            )
        job_type = config.get(name)
        if job_type is None:
            raise UnknownJobType(f"unknown job type {name!r}; known types: {', '.join(config.job_types)}")
        return job_type

    # upload -------------------------------------------------------------------------------
    async def upload(self, request: Request, path_type: str | None) -> dict[str, Any]:
        """Receive, check, record and publish one upload; the 200 answer's body."""
        started = time.perf_counter()
        job_name = path_type or "?"
        try:
            key = idempotency_key(request)
            job_type = self.job_type(path_type) if path_type is not None else None
            with ExitStack() as stack:
                spool = stack.enter_context(tempfile.TemporaryFile(dir=self.settings.spool_dir, prefix="upload-"))
                received = await self._receive(request, spool, multipart_only=path_type is None)
                job_type = job_type or self.job_type(received.job_type)
                job_name = job_type.name
                bodies = stack.enter_context(tempfile.TemporaryFile(dir=self.settings.spool_dir, prefix="rows-"))
                checked = await self.work.run(self._check, spool, bodies, job_type, key is not None)
                draft = _draft(job_type, received.file_name, checked, key)
                record = await self.work.run(self._publish_upload, job_type, draft, bodies)
        except AutoscalerError as error:
            UPLOADS.labels(_outcome(error)).inc()
            log.info("upload type=%s refused status=%d: %s", job_name, error.status, error.message)
            raise
        except ClientDisconnect as error:
            UPLOADS.labels("rejected").inc()
            log.info(
                "upload type=%s abandoned: the client disconnected before the body ended; nothing queued", job_name
            )
            raise MalformedUpload("the request body ended early; nothing was queued") from error
        UPLOADS.labels("ok").inc()
        UPLOAD_SECONDS.observe(time.perf_counter() - started)
        return {
            "upload_id": record.id,
            "job_type": job_type.name,
            "queue": job_type.queue,
            "rows": record.rows,
            "status_url": status_url(record.id),
        }

    async def _receive(self, request: Request, spool: BinaryIO, multipart_only: bool) -> Received:
        """Spool the uploaded CSV into `spool`, within the size and stall limits."""
        limits = self.settings
        check_declared_length(request, limits.max_upload_bytes)
        guarded = Request(request.scope, GuardedReceive(request.receive, limits.max_upload_bytes, limits.body_pace))
        kind = media_type(guarded)
        if kind == "multipart/form-data":
            return await _receive_form(guarded, spool)
        if multipart_only or kind not in RAW_CSV_TYPES:
            accepted = "multipart/form-data" if multipart_only else "multipart/form-data or text/csv"
            raise NotCsvText(f"content type {kind!r} is not accepted here; send {accepted}")
        await spool_raw_body(guarded, spool)
        return Received(None, request.headers.get("x-file-name", RAW_FILE_NAME)[:255])

    def _check(self, spool: BinaryIO, bodies: BinaryIO, job_type: JobType, hashed: bool) -> Checked:
        spool.seek(0)
        check_encoding(spool)
        spool.seek(0)
        converted = convert_rows(spool, bodies, self.settings.rows, job_type.columns)
        return Checked(converted, _sha256(spool) if hashed else None)

    def _publish_upload(self, job_type: JobType, draft: UploadRecord, bodies: BinaryIO) -> UploadRecord:
        record, created = self.store.begin_upload(draft)
        if not created:
            log.info(
                "upload %s: retried with its Idempotency-Key, %d of %d rows confirmed before",
                record.id,
                record.confirmed,
                record.rows,
            )
        record, lease = self.leases.acquire(record.id)  # the confirmed count as it stands under the lease
        if record.cancel_requested:
            raise UploadCancelled(f"upload {record.id} was cancelled; nothing more of it is published")
        if lease is None:
            return record
        started = time.perf_counter()
        result, record = self._publish_leased(job_type, record, bodies, lease)
        ROWS_PUBLISHED.labels(job_type.name).inc(result.confirmed)
        _log_published(record, result, time.perf_counter() - started)
        if record.cancel_requested:  # cancelled (on any replica) while this request published it
            self.store.cancel_unpublished(record.id)
            raise UploadCancelled(
                f"upload {record.id} was cancelled while it was published: {record.confirmed} of {record.rows} rows "
                "were queued (workers skip them), the rest are counted cancelled"
            )
        if result.error is not None:
            raise PublishFailed(
                f"{result.error}; {record.confirmed} of {record.rows} rows were confirmed before the failure; "
                "retry with the same Idempotency-Key to finish this upload",
                upload_id=record.id,
                job_type=job_type.name,
                queue=job_type.queue,
                rows=record.rows,
                confirmed=record.confirmed,
                status_url=status_url(record.id),
            )
        return record

    def _publish_leased(
        self, job_type: JobType, record: UploadRecord, bodies: BinaryIO, lease: PublishLease
    ) -> tuple[PublishResult, UploadRecord]:
        """Publish the rows after the confirmed count while holding the upload's lease."""
        first = record.confirmed + 1
        bodies.seek(0)
        window = self.settings.publish_window
        result, record = lease.publish(
            lambda control: publish_rows(job_type, record.id, file_rows(bodies, first), window, first, control=control)
        )
        self.orphans.declared(job_type.queue)
        if result.error == CANCELLED:
            result.error = None  # not a failure: the record says cancelled
        return result, record

    # the record -------------------------------------------------------------------------------
    def describe(self, record: UploadRecord) -> dict[str, Any]:
        """The record as the API shows it, `orphaned` (with the reason) if no worker can take its rows."""
        orphaned = self.orphans.reason(record)
        return public(record, status_url(record.id), time.time(), self.store.max_failed_rows, orphaned)

    def record(self, upload_id: str) -> dict[str, Any]:
        self.config.refresh()
        return self.describe(self.store.get(upload_id))

    def recent(self, job_type: str | None, state: str | None, limit: int) -> dict[str, Any]:
        if state is not None and state not in STATES:
            raise MalformedUpload(f"state {state[:40]!r} is not one of {', '.join(STATES)}")
        self.config.refresh()
        return {"uploads": [self.describe(record) for record in self.store.recent(job_type, state, limit)]}

    def failed_rows(self, upload_id: str) -> Iterator[str]:
        record = self.store.get(upload_id)
        return failed_rows_csv(record, self.store.dead_rows(upload_id), self.store.max_failed_rows)

    # replay and cancel --------------------------------------------------------------------------
    async def replay(self, upload_id: str) -> dict[str, Any]:
        """Re-queue the rows dead right now (each once, even when two replays race); `{"replayed": n}`."""
        return await self.work.run(self._replay, upload_id)

    def _replay(self, upload_id: str) -> dict[str, Any]:
        record = self.store.get(upload_id)
        if record.cancel_requested:
            raise UploadCancelled(f"upload {upload_id} was cancelled: its dead rows are not replayed")
        job_type = self.job_type(record.job_type)
        claim = self.store.claim_replay(upload_id)
        answer = {"replayed": 0, "replay": claim.number, "not_replayable": claim.not_replayable}
        if not claim.started:
            return answer
        # Rows are claimed a page at a time as the publisher takes them: memory stays flat however many are dead.
        rows = ((row.row, row.line or record.line_of(row.row), (row.body or "").encode()) for row in claim.rows)
        result = publish_rows(job_type, upload_id, rows, self.settings.publish_window, replay=claim.number)
        self.orphans.declared(job_type.queue)
        if result.error is not None:
            released = self.store.release_replay(upload_id, claim.number, result.confirmed_through)
            claim.finish()
            replayed = claim.claimed - released
            log.info("upload %s: replay %d re-queued %d dead rows, then failed", upload_id, claim.number, replayed)
            raise PublishFailed(
                f"{result.error}; {replayed} of the dead rows were re-queued, the others are dead again: "
                "replay again later",
                replayed=replayed,
            )
        claim.finish()
        log.info("upload %s: replay %d re-queued %d dead rows", upload_id, claim.number, claim.claimed)
        return {**answer, "replayed": claim.claimed}

    def cancel(self, upload_id: str) -> dict[str, Any]:
        record = self.store.request_cancel(upload_id)
        # A request publishing it, on any replica, sees the cancel within PRODUCER_PUBLISH_PROGRESS_SECONDS,
        # stops and counts the unpublished rows itself.
        if not self.store.publishing_now(upload_id) and self.store.cancel_unpublished(upload_id):
            record = self.store.get(upload_id)
        log.info("upload %s: cancel requested (%s, %d rows pending)", upload_id, record.state, record.pending)
        if self.tracker is not None:
            self.tracker.announce_cancel()
        return self.describe(record)


def _outcome(error: AutoscalerError) -> str:
    """The producer_uploads_total label of a refused upload."""
    if isinstance(error, StoreUnavailable):
        return "store_error"
    return "broker_error" if error.status == 503 else "rejected"


def status_url(upload_id: str) -> str:
    return f"/uploads/{upload_id}"


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.match(key):
        raise MalformedUpload("the Idempotency-Key header must be 1 to 200 printable ASCII characters, no spaces")
    return key


async def _receive_form(request: Request, spool: BinaryIO) -> Received:
    try:
        form = await request.form(max_files=2, max_fields=20, max_part_size=64 * 1024)
    except MultiPartException as error:
        raise MalformedUpload(f"malformed multipart form: {error}") from error
    try:
        files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not files:
            raise MalformedUpload("no file: send the CSV as the multipart field 'file' (curl -F file=@data.csv)")
        if len(files) > 1:
            raise MalformedUpload("two files in the field 'file': upload one CSV file per request")
        other_files = [key for key, value in form.multi_items() if isinstance(value, UploadFile) and key != "file"]
        if other_files:
            raise MalformedUpload(f"unexpected file field {other_files[0]!r}: only 'file' is read")
        await run_in_threadpool(_copy, files[0].file, spool)
        job_type = form.get("job_type")
        return Received(job_type if isinstance(job_type, str) else None, (files[0].filename or "upload.csv")[:255])
    finally:
        await form.close()


def _copy(source: BinaryIO, sink: BinaryIO) -> None:
    source.seek(0)
    while chunk := source.read(1024 * 1024):
        sink.write(chunk)


def _sha256(spool: BinaryIO) -> str:
    spool.seek(0)
    digest = hashlib.sha256()
    while chunk := spool.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _draft(job_type: JobType, file_name: str, checked: Checked, key: str | None) -> UploadRecord:
    converted = checked.converted
    return UploadRecord(
        id=uuid.uuid4().hex,
        job_type=job_type.name,
        file_name=file_name,
        rows=converted.rows,
        header=converted.header,
        line_breaks=[(1, converted.first_line - 1)],
        created_at=time.time(),
        idempotency_key=key,
        file_hash=checked.file_hash,
    )


def _log_published(record: UploadRecord, result: PublishResult, seconds: float) -> None:
    outcome = "cancelled" if record.cancel_requested else f"failed: {result.error}" if result.error else "queued"
    log.log(
        logging.ERROR if result.error else logging.INFO,
        "upload %s type=%s rows=%d confirmed=%d seconds=%.2f rows_per_s=%.0f %s",
        record.id,
        record.job_type,
        record.rows,
        record.confirmed,
        seconds,
        result.confirmed / max(seconds, 1e-6),
        outcome,
    )
