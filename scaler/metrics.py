"""Prometheus metrics of the scaler (served at GET /metrics).

Per-type gauges are removed when their type leaves the config (`forget_type`),
so a dashboard never shows the last value of a type that no longer exists.
"""

from prometheus_client import Counter, Gauge, Histogram

from scaler.backends.base import LIVE_STATES

QUEUE_READY = Gauge("scaler_queue_ready", "Messages ready in the job type's queue", ["job_type"])
QUEUE_UNACKED = Gauge("scaler_queue_unacked", "Messages delivered and not yet acknowledged", ["job_type"])
QUEUE_DEAD = Gauge("scaler_queue_dead", "Messages parked in the job type's dead-letter queue", ["job_type"])
WORKERS = Gauge("scaler_workers", "Workers by job type and state", ["job_type", "state"])
DESIRED = Gauge("scaler_desired_workers", "Workers the job type wants before the budget is shared", ["job_type"])
SHARE = Gauge("scaler_budget_share", "Workers the job type may keep under the shared budget", ["job_type"])
BUDGET_USED = Gauge(
    "scaler_budget_used",
    "Live workers, or their summed requests of a resource, counted against the budget",
    ["resource"],
)
BUDGET_TOTAL = Gauge(
    "scaler_budget_total", "The budget shared by all job types ('workers' or a resource)", ["resource"]
)
FAILED_STARTS = Counter("scaler_failed_starts_total", "Workers that failed before they ever consumed", ["job_type"])
SCALE_EVENTS = Counter("scaler_scale_events_total", "Scaling decisions carried out", ["job_type", "direction"])
TICK_SECONDS = Histogram(
    "scaler_tick_duration_seconds",
    "Duration of one control-loop tick",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BROKER_UP = Gauge("scaler_broker_reachable", "1 when the last tick could read the management API")
PER_TYPE = (QUEUE_READY, QUEUE_UNACKED, QUEUE_DEAD, DESIRED, SHARE)
WORKER_STATES = tuple(state.value for state in LIVE_STATES)


def forget_type(name: str) -> None:
    """Drop every per-type gauge of a type that left the config."""
    for gauge in PER_TYPE:
        _remove(gauge, name)
    for state in WORKER_STATES:
        _remove(WORKERS, name, state)


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
