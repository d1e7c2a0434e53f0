"""The producer's settings, all from the environment (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from uploads.settings import UploadSettings

GIB = 1024**3
MIB = 1024**2


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from error


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise SystemExit(f"{name}={raw!r} is not a number") from error


@dataclass(frozen=True)
class ProducerSettings:
    host: str
    port: int
    token: str | None
    max_upload_bytes: int
    max_field_bytes: int
    max_columns: int
    body_timeout_seconds: float
    publish_window: int
    spool_dir: str | None
    uploads: UploadSettings = field(default_factory=UploadSettings)

    @classmethod
    def from_environment(cls) -> ProducerSettings:
        return cls(
            host=os.environ.get("PRODUCER_HOST", "127.0.0.1"),
            port=_int("PRODUCER_PORT", 8000),
            token=os.environ.get("PRODUCER_TOKEN") or None,
            max_upload_bytes=_int("PRODUCER_MAX_UPLOAD_BYTES", GIB),
            max_field_bytes=_int("PRODUCER_MAX_FIELD_BYTES", MIB),
            max_columns=_int("PRODUCER_MAX_COLUMNS", 10_000),
            body_timeout_seconds=_float("PRODUCER_BODY_TIMEOUT_SECONDS", 30.0),
            publish_window=_int("PRODUCER_PUBLISH_WINDOW", 2000),
            spool_dir=os.environ.get("PRODUCER_SPOOL_DIR") or None,
            uploads=UploadSettings.from_environment(),
        )
