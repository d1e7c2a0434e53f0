"""The upload record's settings, from the environment (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from jobtypes.settings import REPO_ROOT

DEFAULT_DATABASE_URL = f"sqlite:///{REPO_ROOT / '.run' / 'uploads.db'}"
DAY = 86_400.0


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise SystemExit(f"{name}={raw!r} is not a number") from error
    if value <= 0:
        raise SystemExit(f"{name}={raw!r} must be above 0")
    return value


def _switch(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "on", "true", "1", "yes"):
        return default if raw == "" else True
    if raw in ("off", "false", "0", "no"):
        return False
    raise SystemExit(f"{name}={raw!r}: use on or off")


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
    #: Outcome reports applied per transaction at most.
    report_batch: int = 200
    #: Whether this producer consumes outcome reports (off: something else reads them, e.g. a test).
    tracker: bool = True

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * DAY

    @classmethod
    def from_environment(cls) -> UploadSettings:
        return cls(
            database_url=os.environ.get("UPLOADS_DATABASE_URL") or DEFAULT_DATABASE_URL,
            retention_days=_number("UPLOADS_RETENTION_DAYS", cls.retention_days),
            max_failed_rows=int(_number("UPLOADS_MAX_FAILED_ROWS", cls.max_failed_rows)),
            cancel_notice_seconds=_number("UPLOADS_CANCEL_NOTICE_SECONDS", cls.cancel_notice_seconds),
            report_batch=int(_number("UPLOADS_REPORT_BATCH", cls.report_batch)),
            tracker=_switch("UPLOADS_TRACKER", cls.tracker),
        )
