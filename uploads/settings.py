"""The upload record's settings, from the environment (documented in the README)."""

from __future__ import annotations

from dataclasses import dataclass

from common.env import env_flag, env_float, env_int, env_str
from common.settings import REPO_ROOT

DEFAULT_DATABASE_URL = f"sqlite:///{REPO_ROOT / '.run' / 'uploads.db'}"
DAY = 86_400.0


@dataclass(frozen=True)
class UploadSettings:
    #: SQLAlchemy URL: sqlite:///path (default .run/uploads.db), postgresql+psycopg://..., or memory://.
    database_url: str = DEFAULT_DATABASE_URL
    #: Records (and their row states) are removed this long after they finished.
    retention_days: float = 30.0
    #: Dead rows per upload whose body and error are kept for the failed-row report and replay.
    max_failed_rows: int = 10_000
    #: How often the cancel notice is repeated while a cancelled upload still has pending rows.
    cancel_notice_seconds: float = 2.0
    #: A replay that claimed no page of rows for this long was interrupted (its producer died): the next replay
    #: of the upload claims the rows it left pending too.
    replay_stale_seconds: float = 120.0
    #: Outcome reports applied per transaction at most.
    report_batch: int = 200
    #: Largest outcome report the tracker reads; a bigger one is dead-lettered unread. Workers split theirs at
    #: WORKER_REPORT_MAX_BYTES, but one dead row's report carries its whole body (up to PRODUCER_MAX_MESSAGE_BYTES).
    max_report_bytes: int = 8 * 1024 * 1024
    #: A tracker that made no progress this long while reports wait makes /healthz answer 503 and is restarted.
    tracker_stall_seconds: float = 30.0
    #: Whether this producer consumes outcome reports (off: something else reads them, e.g. a test).
    tracker: bool = True

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * DAY

    @classmethod
    def from_environment(cls) -> UploadSettings:
        return cls(
            database_url=env_str("UPLOADS_DATABASE_URL", DEFAULT_DATABASE_URL),
            retention_days=env_float("UPLOADS_RETENTION_DAYS", cls.retention_days, above=0),
            max_failed_rows=env_int("UPLOADS_MAX_FAILED_ROWS", cls.max_failed_rows, minimum=1),
            cancel_notice_seconds=env_float("UPLOADS_CANCEL_NOTICE_SECONDS", cls.cancel_notice_seconds, above=0),
            replay_stale_seconds=env_float("UPLOADS_REPLAY_STALE_SECONDS", cls.replay_stale_seconds, above=0),
            report_batch=env_int("UPLOADS_REPORT_BATCH", cls.report_batch, minimum=1),
            max_report_bytes=env_int("UPLOADS_MAX_REPORT_BYTES", cls.max_report_bytes, minimum=1024),
            tracker_stall_seconds=env_float("UPLOADS_TRACKER_STALL_SECONDS", cls.tracker_stall_seconds, above=0),
            tracker=env_flag("UPLOADS_TRACKER", cls.tracker),
        )
