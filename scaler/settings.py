"""Every setting of the scaler process, read from the environment once, with named defaults.

`ScalerSettings.from_environment()` is the only place the scaler reads its own
variables (its health check's, its backends' and its leader election's
included, through the shared `common.env` helpers); everything else gets the
settings object. Bad values stop the scaler at start, before any thread runs
or the cluster is contacted, with a message that names the variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes.utils.quantity import parse_quantity

from common.env import SettingsError, env_flag, env_float, env_int, env_str
from common.settings import REPO_ROOT
from scaler.backends.kubernetes_settings import KubernetesSettings
from scaler.backends.local_settings import LocalSettings
from scaler.budget import Budget
from scaler.history import HistorySettings
from scaler.policy import Backoff

#: Seconds between ticks.
DEFAULT_TICK_SECONDS = 1.0
#: First wait before probing a failing type again; it doubles per failed round up to the maximum.
DEFAULT_BACKOFF_SECONDS = 5.0
DEFAULT_MAX_BACKOFF_SECONDS = 300.0
#: How often the pause/drain set is re-read from its store (another replica may have changed it).
DEFAULT_CONTROLS_REFRESH_SECONDS = 5.0
DEFAULT_STATE_DIR = REPO_ROOT / ".run" / "scaler"
#: A scaler thread that made no progress for this long is stuck.
DEFAULT_HEALTH_STALE_SECONDS = 60.0

__all__ = ["ScalerSettings", "SettingsError", "resource_budgets"]


@dataclass(frozen=True)
class ScalerSettings:
    backend: str = "local"
    host: str = "127.0.0.1"
    port: int = 8080
    tick_seconds: float = DEFAULT_TICK_SECONDS
    state_dir: Path = DEFAULT_STATE_DIR
    producer_url: str = "http://127.0.0.1:8000"
    budget: Budget = field(default_factory=Budget)
    backoff: Backoff = field(default_factory=Backoff)
    leader_election: bool = True
    controls_refresh_seconds: float = DEFAULT_CONTROLS_REFRESH_SECONDS
    #: Kubernetes: the Lease whose annotation keeps the pause/drain set.
    controls_lease: str = "queue-autoscaler-scaler-controls"
    #: Tick at once when the producer says work arrived (False: scale on the interval only, as a baseline).
    wake_ups: bool = True
    #: A scaler thread (control loop, worker channel) that made no progress for this long is stuck (`/healthz`).
    health_stale_seconds: float = DEFAULT_HEALTH_STALE_SECONDS
    #: How long and how finely the dashboard's charts are kept (`scaler.history`).
    history: HistorySettings = field(default_factory=HistorySettings)
    #: The local backend's limits (worker logs, templates, environment passthrough).
    local: LocalSettings = field(default_factory=LocalSettings)
    #: The Kubernetes backend's and the leader election's settings.
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    @classmethod
    def from_environment(cls) -> ScalerSettings:
        return cls(
            backend=env_str("SCALER_BACKEND", cls.backend),
            host=env_str("SCALER_HOST", cls.host),
            port=env_int("SCALER_PORT", cls.port, minimum=0),
            tick_seconds=env_float("SCALER_TICK_SECONDS", DEFAULT_TICK_SECONDS, minimum=0),
            state_dir=Path(env_str("SCALER_STATE_DIR", DEFAULT_STATE_DIR)),
            producer_url=env_str("PRODUCER_URL", cls.producer_url).rstrip("/"),
            budget=Budget(
                max_workers=env_int("SCALER_MAX_TOTAL_WORKERS", None, minimum=0),
                resources=resource_budgets(env_str("SCALER_RESOURCE_BUDGETS", "")),
            ),
            backoff=Backoff(
                env_float("SCALER_BACKOFF_SECONDS", DEFAULT_BACKOFF_SECONDS, minimum=0),
                env_float("SCALER_MAX_BACKOFF_SECONDS", DEFAULT_MAX_BACKOFF_SECONDS, minimum=0),
            ),
            leader_election=env_flag("SCALER_LEADER_ELECTION", cls.leader_election),
            controls_refresh_seconds=env_float(
                "SCALER_CONTROLS_REFRESH_SECONDS", DEFAULT_CONTROLS_REFRESH_SECONDS, minimum=0
            ),
            controls_lease=env_str("SCALER_CONTROLS_LEASE", cls.controls_lease),
            wake_ups=env_flag("SCALER_WAKE_UPS", cls.wake_ups),
            health_stale_seconds=env_float("SCALER_HEALTH_STALE_SECONDS", DEFAULT_HEALTH_STALE_SECONDS, minimum=0),
            history=HistorySettings.from_environment(),
            local=LocalSettings.from_environment(),
            kubernetes=KubernetesSettings.from_environment(),
        )


def resource_budgets(text: str) -> dict[str, float]:
    """`SCALER_RESOURCE_BUDGETS`: a JSON object of resource name -> Kubernetes quantity, e.g.
    `{"nvidia.com/gpu": 4, "cpu": "8"}`; empty means no resource budget."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsError(f"SCALER_RESOURCE_BUDGETS is not JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(data, dict):
        raise SettingsError('SCALER_RESOURCE_BUDGETS must be a JSON object, e.g. {"nvidia.com/gpu": 4}')
    budgets = {}
    for name, quantity in data.items():
        try:
            budgets[name] = float(parse_quantity(quantity))
        except (ValueError, TypeError):
            raise SettingsError(
                f"SCALER_RESOURCE_BUDGETS: {name}: {quantity!r} is not a Kubernetes quantity (e.g. 4, '8', '500m')"
            ) from None
    return budgets
