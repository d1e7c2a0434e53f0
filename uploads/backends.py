"""Choose the upload store's backend from one URL (UPLOADS_DATABASE_URL)."""

from __future__ import annotations

from uploads.memory import MemoryStore
from uploads.settings import UploadSettings
from uploads.sql import SqlStore
from uploads.store import UploadStore


def open_store(settings: UploadSettings) -> UploadStore:
    """`memory://` keeps records in this process only; any other URL is a SQLAlchemy URL (SQLite, Postgres)."""
    limits = {"replay_stale_seconds": settings.replay_stale_seconds}
    if settings.database_url.startswith("memory:"):
        return MemoryStore(settings.max_failed_rows, settings.retention_seconds, **limits)
    return SqlStore(settings.database_url, settings.max_failed_rows, settings.retention_seconds, **limits)
