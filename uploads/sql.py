"""The upload store on SQL (SQLAlchemy Core): SQLite by default, Postgres by URL.

Four tables: `uploads` (one row per upload, counters included, so reading a
record is one indexed lookup), `upload_settled` (the settled rows' bitmap, a
few compressed chunks per upload), `upload_rows` (one row per data row that
is retrying, dead or replayed; a row never reported is pending and a settled
row is one bit, so neither has a row here) and `upload_replays` (replays in
progress, to tell an interrupted one). The counters, the bitmap and the row
states change in the same transaction. On Postgres the upload's row is locked
(`SELECT ... FOR UPDATE`) by every write, so two trackers or two replays of
one upload take turns; SQLite writes start with `BEGIN IMMEDIATE`, which
serialises writers the same way.

A fifth table, `upload_leases`, says which producer publishes an upload
right now (one row per upload being published, removed when publishing
ends); it is only written with the upload's row locked, like everything else.

Any database error becomes `StoreUnavailable` with the database's words.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from uploads.errors import StoreUnavailable
from uploads.model import Lease, RowState, UploadRecord, UploadState
from uploads.store import DuplicateKey, UploadStore

log = logging.getLogger("uploads.sql")
metadata = MetaData()

UPLOADS = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_type", String(128), nullable=False),
    Column("file_name", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("header", Text, nullable=False),
    Column("line_breaks", Text, nullable=False),
    Column("idempotency_key", String(256), unique=True),
    Column("file_hash", String(64)),
    Column("state", String(16), nullable=False),
    Column("confirmed", Integer, nullable=False),
    Column("publish_error", Text),
    Column("succeeded", Integer, nullable=False),
    Column("retrying", Integer, nullable=False),
    Column("dead", Integer, nullable=False),
    Column("cancelled", Integer, nullable=False),
    Column("replay", Integer, nullable=False),
    Column("failed_details", Integer, nullable=False),
    Column("details_dropped", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("first_report_at", Float),
    Column("finished_at", Float),
    Column("rate", Float, nullable=False),
    Column("rate_at", Float),
    Index("uploads_created", "created_at"),
    Index("uploads_state", "state"),
)

ROWS = Table(
    "upload_rows",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("row", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("replay", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text),
    Column("body", Text),
    Column("line", BigInteger),
    Index("upload_rows_state", "upload_id", "state", "row"),
)

LEASES = Table(
    "upload_leases",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("upload_leases_expiry", "expires_at"),
)

# Settled rows (succeeded, cancelled) of an upload: compressed bitmap chunks (uploads/settled.py), no row state.
SETTLED = Table(
    "upload_settled",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("chunk", Integer, primary_key=True, autoincrement=False),
    Column("bits", LargeBinary, nullable=False),
)

# Replays in progress: renewed with every page a replay claims, removed when it ends; one not renewed for a while
# was interrupted, and the next replay claims the rows it left pending.
REPLAYS = Table(
    "upload_replays",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("renewed_at", Float, nullable=False),
)

ROW_FIELDS = ("state", "replay", "attempts", "error", "body", "line")
#: Row numbers of one query above which rows are read by range (one index scan) instead of by list.
MAX_LISTED_ROWS = 500


def _to_columns(record: UploadRecord) -> dict[str, Any]:
    values = dict(record.__dict__)
    values["header"] = json.dumps(record.header)
    values["line_breaks"] = json.dumps(record.line_breaks)
    return values


def _to_record(row: Any) -> UploadRecord:
    values = dict(row._mapping)
    values["header"] = json.loads(values["header"])
    values["line_breaks"] = [tuple(pair) for pair in json.loads(values["line_breaks"])]
    return UploadRecord(**values)


def _to_row(row: Any) -> RowState:
    return RowState(row.row, row.state, row.replay, row.attempts, row.error, row.body, row.line)


class _SqlTransaction:
    def __init__(self, connection: Connection) -> None:
        self.c = connection

    def get_upload(self, upload_id: str, for_update: bool = False) -> UploadRecord | None:
        query = select(UPLOADS).where(UPLOADS.c.id == upload_id)
        row = self.c.execute(query.with_for_update() if for_update else query).first()
        return _to_record(row) if row is not None else None

    def find_key(self, key: str) -> UploadRecord | None:
        row = self.c.execute(select(UPLOADS).where(UPLOADS.c.idempotency_key == key)).first()
        return _to_record(row) if row is not None else None

    def insert_upload(self, record: UploadRecord) -> None:
        try:
            with self.c.begin_nested():
                self.c.execute(insert(UPLOADS).values(_to_columns(record)))
        except IntegrityError as error:
            raise DuplicateKey(record.id) from error

    def update_upload(self, record: UploadRecord) -> None:
        self.c.execute(update(UPLOADS).where(UPLOADS.c.id == record.id).values(_to_columns(record)))

    def list_uploads(self, job_type: str | None, state: str | None, limit: int) -> list[UploadRecord]:
        query = select(UPLOADS).order_by(UPLOADS.c.created_at.desc()).limit(limit)
        if job_type is not None:
            query = query.where(UPLOADS.c.job_type == job_type)
        if state is not None:
            query = query.where(UPLOADS.c.state == state)
        return [_to_record(row) for row in self.c.execute(query)]

    def cancelled_unfinished(self) -> list[str]:
        query = select(UPLOADS.c.id).where(UPLOADS.c.cancel_requested, UPLOADS.c.finished_at.is_(None))
        return [row.id for row in self.c.execute(query)]

    def count_in_states(self, states: tuple[str, ...]) -> int:
        return self.c.execute(select(func.count()).where(UPLOADS.c.state.in_(states))).scalar_one()

    def get_rows(self, upload_id: str, rows: Iterable[int]) -> dict[int, RowState]:
        """The row states of `rows` (most rows have none): by list when few, else by their range."""
        numbers = set(rows)
        if not numbers:
            return {}
        where = ROWS.c.row.in_(numbers) if len(numbers) <= MAX_LISTED_ROWS else ROWS.c.row.between(*_span(numbers))
        found = self.c.execute(select(ROWS).where(ROWS.c.upload_id == upload_id, where))
        return {row.row: _to_row(row) for row in found if row.row in numbers}

    def delete_rows(self, upload_id: str, rows: list[int]) -> None:
        for start in range(0, len(rows), MAX_LISTED_ROWS):
            chunk = rows[start : start + MAX_LISTED_ROWS]
            self.c.execute(delete(ROWS).where(ROWS.c.upload_id == upload_id, ROWS.c.row.in_(chunk)))

    def get_settled(self, upload_id: str, chunks: Iterable[int]) -> dict[int, bytes]:
        query = select(SETTLED.c.chunk, SETTLED.c.bits).where(
            SETTLED.c.upload_id == upload_id, SETTLED.c.chunk.in_(list(chunks))
        )
        return {row.chunk: row.bits for row in self.c.execute(query)}

    def put_settled(self, upload_id: str, inserted: dict[int, bytes], updated: dict[int, bytes]) -> None:
        if inserted:
            values = [{"upload_id": upload_id, "chunk": chunk, "bits": bits} for chunk, bits in inserted.items()]
            self.c.execute(insert(SETTLED), values)
        if updated:
            statement = (
                update(SETTLED)
                .where(and_(SETTLED.c.upload_id == bindparam("b_upload"), SETTLED.c.chunk == bindparam("b_chunk")))
                .values(bits=bindparam("b_bits"))
            )
            values = [{"b_upload": upload_id, "b_chunk": chunk, "b_bits": bits} for chunk, bits in updated.items()]
            self.c.execute(statement, values)

    def put_rows(self, upload_id: str, inserted: list[RowState], updated: list[RowState]) -> None:
        if inserted:
            self.c.execute(insert(ROWS), [{"upload_id": upload_id, **row.__dict__} for row in inserted])
        if updated:
            statement = (
                update(ROWS)
                .where(and_(ROWS.c.upload_id == bindparam("b_upload"), ROWS.c.row == bindparam("b_row")))
                .values({name: bindparam(name) for name in ROW_FIELDS})
            )
            self.c.execute(
                statement,
                [
                    {"b_upload": upload_id, "b_row": row.row, **{name: getattr(row, name) for name in ROW_FIELDS}}
                    for row in updated
                ],
            )

    def rows_in_state(self, upload_id: str, state: str, after_row: int, limit: int) -> list[RowState]:
        query = (
            select(ROWS)
            .where(ROWS.c.upload_id == upload_id, ROWS.c.state == state, ROWS.c.row > after_row)
            .order_by(ROWS.c.row)
            .limit(limit)
        )
        return [_to_row(row) for row in self.c.execute(query)]

    def numbers_between(self, upload_id: str, first: int, last: int) -> set[int]:
        query = select(ROWS.c.row).where(ROWS.c.upload_id == upload_id, ROWS.c.row.between(first, last))
        return {row.row for row in self.c.execute(query)}

    def touch_replay(self, upload_id: str, number: int, now: float) -> None:
        where = and_(REPLAYS.c.upload_id == upload_id, REPLAYS.c.number == number)
        if self.c.execute(update(REPLAYS).where(where).values(renewed_at=now)).rowcount == 0:
            self.c.execute(insert(REPLAYS).values(upload_id=upload_id, number=number, renewed_at=now))

    def end_replays(self, upload_id: str, numbers: list[int]) -> None:
        self.c.execute(delete(REPLAYS).where(REPLAYS.c.upload_id == upload_id, REPLAYS.c.number.in_(numbers)))

    def stale_replays(self, upload_id: str, cutoff: float) -> list[int]:
        query = select(REPLAYS.c.number).where(REPLAYS.c.upload_id == upload_id, REPLAYS.c.renewed_at < cutoff)
        return [row.number for row in self.c.execute(query)]

    def delete_finished_before(self, cutoff: float) -> int:
        old = select(UPLOADS.c.id).where(UPLOADS.c.finished_at < cutoff)
        ids = [row.id for row in self.c.execute(old)]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for table in (ROWS, SETTLED, REPLAYS):
                self.c.execute(delete(table).where(table.c.upload_id.in_(chunk)))
            self.c.execute(delete(UPLOADS).where(UPLOADS.c.id.in_(chunk)))
        return len(ids)

    # publishing leases -----------------------------------------------------------------------
    def get_lease(self, upload_id: str) -> Lease | None:
        row = self.c.execute(select(LEASES).where(LEASES.c.upload_id == upload_id)).first()
        return Lease(row.upload_id, row.holder, row.expires_at) if row is not None else None

    def put_lease(self, lease: Lease) -> None:
        """Insert or replace (callers hold the upload's row lock, so no one else writes this lease meanwhile)."""
        values = {"holder": lease.holder, "expires_at": lease.expires_at}
        if self.c.execute(update(LEASES).where(LEASES.c.upload_id == lease.upload_id).values(values)).rowcount == 0:
            self.c.execute(insert(LEASES).values(upload_id=lease.upload_id, **values))

    def delete_lease(self, upload_id: str) -> None:
        self.c.execute(delete(LEASES).where(LEASES.c.upload_id == upload_id))

    def expired_leases(self, now: float) -> list[str]:
        return [row.upload_id for row in self.c.execute(select(LEASES.c.upload_id).where(LEASES.c.expires_at <= now))]

    def unleased_publishing(self, created_before: float) -> list[str]:
        query = (
            select(UPLOADS.c.id)
            .outerjoin(LEASES, LEASES.c.upload_id == UPLOADS.c.id)
            .where(
                UPLOADS.c.state == UploadState.PUBLISHING.value,
                UPLOADS.c.created_at < created_before,
                LEASES.c.upload_id.is_(None),
            )
        )
        return [row.id for row in self.c.execute(query)]


def _span(numbers: set[int]) -> tuple[int, int]:
    return min(numbers), max(numbers)


def database_url(url: str) -> URL:
    """The URL as SQLAlchemy needs it: a plain postgres:// or postgresql:// URL (as managed databases give) uses psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class SqlStore(UploadStore):
    def __init__(self, url: str, max_failed_rows: int, retention_seconds: float, **kwargs) -> None:
        super().__init__(max_failed_rows, retention_seconds, **kwargs)
        self.url = database_url(url)
        self.engine = _engine(self.url)
        #: The longest transaction so far, in seconds (a caller may reset it to 0 to measure one operation).
        self.longest_transaction_seconds = 0.0
        try:
            metadata.create_all(self.engine)
            _migrate(self.engine)
        except SQLAlchemyError as error:
            raise StoreUnavailable(f"cannot open the upload store at {self.describe()}: {_reason(error)}") from error

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def disk_bytes(self) -> int:
        """The store's size on disk: SQLite's file (its WAL checkpointed first), or on Postgres its tables with
        their indexes and TOAST (not vacuumed: dead row versions count)."""
        connection = self.engine.raw_connection()  # outside a transaction: a checkpoint cannot run inside one
        try:
            if self.url.get_backend_name() == "sqlite":
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return Path(str(self.url.database)).stat().st_size
            cursor = connection.cursor()
            cursor.execute("SELECT " + " + ".join(f"pg_total_relation_size('{table}')" for table in metadata.tables))
            size = cursor.fetchone()[0]
            connection.commit()
            return size
        finally:
            connection.close()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[_SqlTransaction]:
        engine = self.engine.execution_options(sqlite_immediate=write)
        started = time.perf_counter()
        try:
            with engine.begin() as connection:
                yield _SqlTransaction(connection)
            seconds = time.perf_counter() - started
            self.longest_transaction_seconds = max(self.longest_transaction_seconds, seconds)
        except (DBAPIError, SQLAlchemyError) as error:
            if isinstance(error, IntegrityError):
                raise
            raise StoreUnavailable(f"the upload store at {self.describe()} failed: {_reason(error)}") from error

    def close(self) -> None:
        self.engine.dispose()


def _migrate(engine: Engine) -> None:
    """Bring a store created by an earlier version up to this schema (create_all adds only missing tables).

    Earlier versions kept a row state for every reported row and no line per
    row; their row states stay valid (a `succeeded` row state still wins over
    later reports), so the only change is the new column.
    """
    if "line" not in {column["name"] for column in inspect(engine).get_columns("upload_rows")}:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE upload_rows ADD COLUMN line BIGINT")
        log.info("upload store migrated: upload_rows.line added")


def _reason(error: SQLAlchemyError) -> str:
    original = getattr(error, "orig", None)
    return str(original or error).strip().splitlines()[0][:300]


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
