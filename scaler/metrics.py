"""Prometheus metrics of the scaler (served at GET /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

QUEUE_READY = Gauge("scaler_queue_ready", "Messages ready in the job type's queue", ["job_type"])
QUEUE_UNACKED = Gauge("scaler_queue_unacked", "Messages delivered and not yet acknowledged", ["job_type"])
QUEUE_DEAD = Gauge("scaler_queue_dead", "Messages parked in the job type's dead-letter queue", ["job_type"])
WORKERS = Gauge("scaler_workers", "Workers by job type and state", ["job_type", "state"])
SCALE_EVENTS = Counter("scaler_scale_events_total", "Scaling decisions carried out", ["job_type", "direction"])
TICK_SECONDS = Histogram(
    "scaler_tick_duration_seconds",
    "Duration of one control-loop tick",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BROKER_UP = Gauge("scaler_broker_reachable", "1 when the last tick could read the management API")
