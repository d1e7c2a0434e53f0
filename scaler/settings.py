"""Every setting of the scaler process, read from the environment once, with named defaults.

`ScalerSettings.from_environment()` is the only place the scaler reads its own
variables; everything else gets the settings object. Bad values stop the
scaler at start with a message that names the variable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes.utils.quantity import parse_quantity

from jobtypes.settings import REPO_ROOT
from scaler.budget import Budget
from scaler.policy import Backoff

#: Seconds between ticks.
DEFAULT_TICK_SECONDS = 1.0
#: First wait before probing a failing type again; it doubles per failed round up to the maximum.
DEFAULT_BACKOFF_SECONDS = 5.0
DEFAULT_MAX_BACKOFF_SECONDS = 300.0
#: How often the pause/drain set is re-read from its store (another replica may have changed it).
DEFAULT_CONTROLS_REFRESH_SECONDS = 5.0
DEFAULT_STATE_DIR = REPO_ROOT / ".run" / "scaler"


class SettingsError(ValueError):
    """A scaler environment variable has a value that cannot be used; the message names it."""


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

    @classmethod
    def from_environment(cls) -> ScalerSettings:
        env = os.environ
        max_workers = env.get("SCALER_MAX_TOTAL_WORKERS", "").strip()
        return cls(
            backend=env.get("SCALER_BACKEND", "local"),
            host=env.get("SCALER_HOST", "127.0.0.1"),
            port=_number("SCALER_PORT", int, "8080"),
            tick_seconds=_number("SCALER_TICK_SECONDS", float, str(DEFAULT_TICK_SECONDS)),
            state_dir=Path(env.get("SCALER_STATE_DIR") or DEFAULT_STATE_DIR),
            producer_url=env.get("PRODUCER_URL", "http://127.0.0.1:8000").rstrip("/"),
            budget=Budget(
                max_workers=_number("SCALER_MAX_TOTAL_WORKERS", int, max_workers) if max_workers else None,
                resources=resource_budgets(env.get("SCALER_RESOURCE_BUDGETS", "")),
            ),
            backoff=Backoff(
                _number("SCALER_BACKOFF_SECONDS", float, str(DEFAULT_BACKOFF_SECONDS)),
                _number("SCALER_MAX_BACKOFF_SECONDS", float, str(DEFAULT_MAX_BACKOFF_SECONDS)),
            ),
            leader_election=env.get("SCALER_LEADER_ELECTION", "true").lower() not in ("0", "false", "no"),
            controls_refresh_seconds=_number(
                "SCALER_CONTROLS_REFRESH_SECONDS", float, str(DEFAULT_CONTROLS_REFRESH_SECONDS)
            ),
            controls_lease=env.get("SCALER_CONTROLS_LEASE", cls.controls_lease),
            wake_ups=env.get("SCALER_WAKE_UPS", "true").lower() not in ("0", "false", "no", "off"),
        )


def _number(name: str, kind: type[int] | type[float], default: str) -> int | float:
    text = os.environ.get(name, "").strip() or default
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < 0:
        raise SettingsError(f"{name}={text!r} must not be negative")
    return value


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
