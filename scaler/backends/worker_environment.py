"""What a local worker finds in its environment: what it needs, nothing of the scaler's.

The scaler's environment holds the management API's credentials, the upload
token and settings of its own; a worker runs job-type code that has no
business with them. A worker gets the operating system's basics (PATH, HOME,
locale, temp dir, Python path), the broker's node list, heartbeat and reconnect wait, the `WORKER_*`
settings of the runtime, its own job type's validated settings
(common.handoff), the type's `env` from the config, and the names an
operator lists in SCALER_WORKER_ENV_PASSTHROUGH. `worker_search_path` is where
such a worker looks for its handler, so the scaler can check it is there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from common.config import JobType
from common.handoff import JOB_TYPE_ENV, encode

#: Variables of the operating system and interpreter that programs expect.
SYSTEM_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"}
)
#: What the worker runtime reads (the queue types for a worker that must declare the queues itself).
WORKER_NAMES = frozenset(
    {
        "RABBITMQ_URL",
        "RABBITMQ_URLS",
        "RABBITMQ_HEARTBEAT_SECONDS",
        "RABBITMQ_RECONNECT_MAX_SECONDS",
        "QUEUE_TYPE",
        "OUTCOMES_QUEUE_TYPE",
    }
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


def worker_search_path(env: Mapping[str, str], cwd: Path) -> list[str]:
    """Where a worker started with `env` in `cwd` (`python -m`) finds modules: `cwd`, then its PYTHONPATH
    (relative entries taken from `cwd`), then this interpreter's own entries. The scaler's own PYTHONPATH
    counts only as far as `env` carries it: a type's `env` that sets PYTHONPATH replaces it for its workers."""
    own = {os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry}
    interpreter = [entry for entry in sys.path[1:] if os.path.abspath(entry) not in own]
    given = [str(cwd / entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return [str(cwd), *given, *interpreter]
