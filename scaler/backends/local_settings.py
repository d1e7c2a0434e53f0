"""The local backend's settings, read once from the environment.

Each limit has a named default: how many finished workers' logs to keep per
job type and how large one log may grow, whether workers are forked from
pre-imported templates, which extra variables of the scaler's own
environment its workers may see, and where each type's broker credential is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.env import env_flag, env_float, env_int, env_str

#: Finished workers' logs kept per job type (the newest); older ones are deleted.
DEFAULT_LOGS_PER_TYPE = 20
#: A worker's log is cut (its tail kept in `<log>.1`) when it grows past this many bytes.
DEFAULT_LOG_MAX_BYTES = 5 * 1024 * 1024
#: Seconds between two sweeps of the logs directory.
DEFAULT_LOG_SWEEP_SECONDS = 5.0


@dataclass(frozen=True)
class LocalSettings:
    logs_per_type: int = DEFAULT_LOGS_PER_TYPE
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_sweep_seconds: float = DEFAULT_LOG_SWEEP_SECONDS
    #: Fork workers from a pre-imported template process per job type (types with a `command` never are).
    templates: bool = True
    #: Names of the scaler's environment variables that workers get besides the ones they need.
    env_passthrough: tuple[str, ...] = ()
    #: Directory of `<type>.url` files, each the RABBITMQ_URL of that type's workers (their own broker user,
    #: scaler.broker_users; ./manage.sh up writes them). None: workers get the scaler's own RABBITMQ_URL.
    worker_credentials: Path | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> LocalSettings:
        return cls(
            logs_per_type=env_int("SCALER_WORKER_LOGS_PER_TYPE", DEFAULT_LOGS_PER_TYPE, minimum=0, environ=environ),
            log_max_bytes=env_int("SCALER_WORKER_LOG_MAX_BYTES", DEFAULT_LOG_MAX_BYTES, minimum=1, environ=environ),
            log_sweep_seconds=env_float(
                "SCALER_WORKER_LOG_SWEEP_SECONDS", DEFAULT_LOG_SWEEP_SECONDS, minimum=0, environ=environ
            ),
            templates=env_flag("SCALER_WORKER_TEMPLATES", cls.templates, environ=environ),
            env_passthrough=tuple(
                name.strip()
                for name in env_str("SCALER_WORKER_ENV_PASSTHROUGH", "", environ=environ).split(",")
                if name.strip()
            ),
            worker_credentials=_path(env_str("SCALER_WORKER_CREDENTIALS_DIR", None, environ=environ)),
        )


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
