"""The producer's settings, all from the environment (documented in the README).

Limits (each a named variable with its default):

- `PRODUCER_MAX_UPLOAD_BYTES` (1 GiB): one upload's body; larger gets 413.
- `PRODUCER_MAX_FIELD_BYTES` (1 MiB), `PRODUCER_MAX_COLUMNS` (10,000): one CSV field, fields per row; 422.
- `PRODUCER_MAX_HEADER_BYTES` (64 KiB): the header line; 422 naming line 1.
- `PRODUCER_MAX_MESSAGE_BYTES` (4 MiB): one row's JSON message (RabbitMQ's own cap is 128 MiB); 422 naming the line.
- `PRODUCER_MAX_SPOOL_RATIO` (10): the JSON bodies may take at most this many times the upload's size
  (plus 1 MiB); 413 naming the line where they would pass it.
- `PRODUCER_MAX_CONCURRENT_UPLOADS` (16) and `PRODUCER_MAX_SPOOL_BYTES` (3 GiB): uploads in flight and their
  spooled bytes (bodies received plus JSON bodies) together; over either, 429 with `Retry-After`.
- `PRODUCER_WORK_THREADS` (the number of CPUs, at least 2): uploads whose rows are checked or published at
  the same time; the others wait (admitted, not refused). Keeps the event loop and the probes responsive.
- `PRODUCER_PUBLISH_WINDOW` (2000): rows published and not yet confirmed by the broker, per upload. Rows
  leave in socket writes of about 256 KiB and at most about 1 MiB waits unsent, whatever the window.
- `PRODUCER_PUBLISH_LEASE_SECONDS` (10), `PRODUCER_PUBLISH_PROGRESS_SECONDS` (0.5), `PRODUCER_LEASE_CHECK_SECONDS`
  (2): publishing leases (producer/leases.py): how long a publisher that stopped renewing keeps an upload, how
  often a publisher stores its confirmed count, renews and looks for a cancel, how often expired leases are
  looked for. The lease must be at least 4 progress intervals: a publisher sends only for half a lease after
  its last renewal, and a renewal needs time.
- `PRODUCER_BODY_TIMEOUT_SECONDS` (30): a body that stalls this long gets 408.
- `PRODUCER_BODY_DEADLINE_SECONDS` (1800) and `PRODUCER_MIN_BODY_BYTES_PER_SECOND` (16384): a body not complete
  within the deadline, or slower on average than the rate once the first PRODUCER_BODY_TIMEOUT_SECONDS have
  passed, gets 408; a slow sender cannot hold an upload slot.
- `PRODUCER_HEALTH_INTERVAL_SECONDS` (5): how often readiness checks the broker, in the background.

Authentication (`PRODUCER_TOKEN`, `AUTH_ALLOW_LOOPBACK`, `AUTH_TRUSTED_PROXIES`, sessions, login throttle) is
`common.auth.AuthSettings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from common.auth import AuthSettings
from common.env import SettingsError, env_float, env_int, env_str
from producer.leases import LeaseSettings
from producer.limits import GIB, MIB, BodyPace, RowLimits
from uploads.settings import UploadSettings


@dataclass(frozen=True)
class ProducerSettings:
    host: str
    port: int
    auth: AuthSettings
    max_upload_bytes: int
    max_field_bytes: int
    rows: RowLimits
    max_concurrent_uploads: int
    max_spool_bytes: int
    work_threads: int
    body_pace: BodyPace
    health_interval_seconds: float
    publish_window: int
    spool_dir: str | None
    uploads: UploadSettings = field(default_factory=UploadSettings)
    leases: LeaseSettings = field(default_factory=LeaseSettings)

    @classmethod
    def from_environment(cls) -> ProducerSettings:
        return cls(
            host=env_str("PRODUCER_HOST", "127.0.0.1"),
            port=env_int("PRODUCER_PORT", 8000, minimum=1),
            auth=AuthSettings.from_environment(),
            max_upload_bytes=env_int("PRODUCER_MAX_UPLOAD_BYTES", GIB, minimum=1),
            max_field_bytes=env_int("PRODUCER_MAX_FIELD_BYTES", MIB, minimum=1),
            rows=RowLimits(
                max_columns=env_int("PRODUCER_MAX_COLUMNS", 10_000, minimum=1),
                max_header_bytes=env_int("PRODUCER_MAX_HEADER_BYTES", 64 * 1024, minimum=1),
                max_message_bytes=env_int("PRODUCER_MAX_MESSAGE_BYTES", 4 * MIB, minimum=1),
                max_spool_ratio=env_float("PRODUCER_MAX_SPOOL_RATIO", 10.0, above=0),
            ),
            max_concurrent_uploads=env_int("PRODUCER_MAX_CONCURRENT_UPLOADS", 16, minimum=1),
            max_spool_bytes=env_int("PRODUCER_MAX_SPOOL_BYTES", 3 * GIB, minimum=1),
            work_threads=env_int("PRODUCER_WORK_THREADS", max(2, os.cpu_count() or 2), minimum=1),
            body_pace=BodyPace(
                idle_timeout_seconds=env_float("PRODUCER_BODY_TIMEOUT_SECONDS", 30.0, above=0),
                deadline_seconds=env_float("PRODUCER_BODY_DEADLINE_SECONDS", 1800.0, above=0),
                min_bytes_per_second=env_float("PRODUCER_MIN_BODY_BYTES_PER_SECOND", 16 * 1024.0, minimum=0),
            ),
            health_interval_seconds=env_float("PRODUCER_HEALTH_INTERVAL_SECONDS", 5.0, above=0),
            publish_window=env_int("PRODUCER_PUBLISH_WINDOW", 2000, minimum=1),
            spool_dir=env_str("PRODUCER_SPOOL_DIR", None),
            uploads=UploadSettings.from_environment(),
            leases=_lease_settings(),
        )


def _lease_settings() -> LeaseSettings:
    defaults = LeaseSettings()
    leases = LeaseSettings(
        lease_seconds=env_float("PRODUCER_PUBLISH_LEASE_SECONDS", defaults.lease_seconds, above=0),
        progress_seconds=env_float("PRODUCER_PUBLISH_PROGRESS_SECONDS", defaults.progress_seconds, above=0),
        check_seconds=env_float("PRODUCER_LEASE_CHECK_SECONDS", defaults.check_seconds, above=0),
    )
    if leases.lease_seconds < 4 * leases.progress_seconds:
        raise SettingsError(
            f"PRODUCER_PUBLISH_LEASE_SECONDS={leases.lease_seconds:g} must be at least 4 times "
            f"PRODUCER_PUBLISH_PROGRESS_SECONDS={leases.progress_seconds:g}: a publisher renews its lease that often "
            "and stops sending half a lease after its last renewal"
        )
    return leases
