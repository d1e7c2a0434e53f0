"""Prometheus metrics of the upload record (served by the producer's /metrics). No per-upload labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from uploads.store import ApplyResult

ROWS_FINISHED = Counter(
    "uploads_rows_finished_total",
    "Rows that reached a final outcome (succeeded, dead, cancelled), per job type, counted once each",
    ["job_type", "outcome"],
)
UPLOAD_DURATION = Histogram(
    "uploads_duration_seconds",
    "Seconds from an upload's first row queued to its last row final",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
IN_PROGRESS = Gauge("uploads_in_progress", "Uploads publishing, queued or running")
REPORTS = Counter(
    "uploads_reports_total",
    "Outcome reports taken by the tracker, by result: applied, or rejected (dead-lettered, whole or in part)",
    ["result"],
)
REJECTED = Counter(
    "uploads_report_rows_rejected_total",
    "Rows of outcome reports set aside, by reason (a report that is not one counts once, as malformed/too-large)",
    ["reason"],
)
WAITING = Gauge("uploads_reports_waiting", "Outcome reports waiting for the tracker: in its queue, or in hand")
STORE_FAILURES = Counter(
    "uploads_tracker_store_failures_total",
    "Batches of reports the store could not take for a passing reason (database down or locked), retried",
)
RESTARTS = Counter(
    "uploads_tracker_restarts_total", "Tracker threads replaced by the watchdog (died, or blocked with reports waiting)"
)
HEALTHY = Gauge("uploads_tracker_healthy", "1 when the tracker is alive and keeping up, 0 when /healthz names it")


def observe(result: ApplyResult) -> None:
    for (job_type, outcome), count in result.finals.items():
        ROWS_FINISHED.labels(job_type, outcome).inc(count)
    for record in result.finished:
        if record.finished_at is not None:
            UPLOAD_DURATION.observe(max(record.finished_at - record.created_at, 0.0))
