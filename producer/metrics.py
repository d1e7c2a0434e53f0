"""Prometheus metrics of the producer (served at GET /metrics)."""

from prometheus_client import Counter, Histogram

ROWS_PUBLISHED = Counter("producer_rows_published_total", "Rows confirmed by the broker, per job type", ["job_type"])
UPLOADS = Counter("producer_uploads_total", "Uploads by outcome (ok, rejected, broker_error)", ["outcome"])
UPLOAD_SECONDS = Histogram(
    "producer_upload_duration_seconds",
    "Seconds from request to answer, for accepted uploads",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
