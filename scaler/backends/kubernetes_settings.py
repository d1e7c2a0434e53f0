"""The Kubernetes backend's and the leader election's settings, read once from the environment.

Part of the scaler's one settings object (`ScalerSettings.kubernetes`), so a
bad value stops the scaler at start, before the cluster's configuration is
loaded and before any replica campaigns for the Lease.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from common.env import SettingsError, env_float, env_int, env_str
from scaler.backends.kubernetes_manifests import ClusterSettings
from scaler.backends.kubernetes_states import StartLimits

#: Default of SCALER_LIST_PAGE_SIZE: Jobs or Pods asked for per list call (the rest follow with a continue token).
DEFAULT_LIST_PAGE_SIZE = 500
#: Default of SCALER_LEASE_NAME: the Lease the scaler replicas compete for.
DEFAULT_LEASE_NAME = "queue-autoscaler-scaler"
#: Default of SCALER_LEASE_SECONDS: how long a standby waits on an unchanged Lease before taking it over.
DEFAULT_LEASE_SECONDS = 15.0


@dataclass(frozen=True)
class KubernetesSettings:
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    limits: StartLimits = field(default_factory=StartLimits)
    page_size: int = DEFAULT_LIST_PAGE_SIZE
    lease_name: str = DEFAULT_LEASE_NAME
    #: This replica's name in the Lease (`POD_NAME`, else the host name).
    identity: str = field(default_factory=socket.gethostname)
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    #: How long a tick's view of the workers may be acted on (None: half the renew deadline).
    tick_deadline: float | None = None

    @classmethod
    def from_environment(cls) -> KubernetesSettings:
        lease_seconds = env_float("SCALER_LEASE_SECONDS", DEFAULT_LEASE_SECONDS, above=0)
        tick_deadline = env_float("SCALER_TICK_DEADLINE_SECONDS", None, above=0)
        if tick_deadline is not None and tick_deadline >= lease_seconds * 2 / 3:
            raise SettingsError(
                f"SCALER_TICK_DEADLINE_SECONDS={tick_deadline:g} must be shorter than the renew deadline "
                f"(two thirds of SCALER_LEASE_SECONDS={lease_seconds:g})"
            )
        return cls(
            cluster=ClusterSettings.from_environment(),
            limits=StartLimits(
                unschedulable_grace=env_float(
                    "SCALER_UNSCHEDULABLE_GRACE_SECONDS", StartLimits.unschedulable_grace, minimum=0
                ),
                start_timeout=env_float("SCALER_START_TIMEOUT_SECONDS", StartLimits.start_timeout, minimum=0),
            ),
            page_size=env_int("SCALER_LIST_PAGE_SIZE", DEFAULT_LIST_PAGE_SIZE, minimum=1),
            lease_name=env_str("SCALER_LEASE_NAME", DEFAULT_LEASE_NAME),
            identity=env_str("POD_NAME", None) or socket.gethostname(),
            lease_seconds=lease_seconds,
            tick_deadline=tick_deadline,
        )
