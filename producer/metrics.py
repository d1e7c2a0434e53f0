"""Prometheus metrics of the producer (served at GET /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

ROWS_PUBLISHED = Counter("producer_rows_published_total", "Rows confirmed by the broker, per job type", ["job_type"])
UPLOADS = Counter("producer_uploads_total", "Uploads by outcome (ok, rejected, broker_error, store_error)", ["outcome"])
UPLOAD_SECONDS = Histogram(
    "producer_upload_duration_seconds",
    "Seconds from request to answer, for accepted uploads",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
UPLOADS_IN_PROGRESS = Gauge("producer_uploads_in_progress", "Uploads admitted and not yet answered")
SPOOL_BYTES = Gauge("producer_spool_bytes", "Bytes spooled by uploads in progress (bodies received, JSON bodies)")
UPLOADS_REFUSED_BUSY = Counter(
    "producer_uploads_busy_total", "Uploads answered 429 (concurrency or spool limit), before or while spooling"
)
