"""What a local worker finds in its environment: what it needs, nothing of the scaler's.

The scaler's environment holds the management API's credentials, the upload
token and settings of its own; a worker runs job-type code that has no
business with them. A worker gets the operating system's basics (PATH, HOME,
locale, temp dir, Python path), the broker's node list, heartbeat and reconnect wait, the `WORKER_*`
settings of the runtime, its own job type's validated settings
(jobtypes.handoff), the type's `env` from the config, and the names an
operator lists in SCALER_WORKER_ENV_PASSTHROUGH.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jobtypes.config import JobType
from jobtypes.handoff import JOB_TYPE_ENV, encode

#: Variables of the operating system and interpreter that programs expect.
SYSTEM_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"}
)
#: What the worker runtime reads.
WORKER_NAMES = frozenset(
    {"RABBITMQ_URL", "RABBITMQ_URLS", "RABBITMQ_HEARTBEAT_SECONDS", "RABBITMQ_RECONNECT_MAX_SECONDS"}
)
PREFIXES = ("LC_", "WORKER_")


def worker_environment(
    job_type: JobType, environ: Mapping[str, str], passthrough: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of every worker of `job_type` (WORKER_ID excepted: each worker gets its own)."""
    allowed = SYSTEM_NAMES | WORKER_NAMES | set(passthrough)
    env = {name: value for name, value in environ.items() if name in allowed or name.startswith(PREFIXES)}
    env.pop("WORKER_ID", None)
    env.update(job_type.env)
    env[JOB_TYPE_ENV] = encode(job_type)
    env["PYTHONUNBUFFERED"] = "1"
    return env
