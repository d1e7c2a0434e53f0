"""One job type's validated settings, handed from the scaler to the workers it starts.

A worker that re-read `jobs.config.json` at start would exit on an edit the
scaler rejected, and would run with settings the scaler is not using. So the
scaler puts the settings it validated and scales by into the worker's
environment (`WORKER_JOB_TYPE`, the type as one JSON object, the same on the
local backend and in a Kubernetes Job manifest), and a worker prefers them to
the file. The file stays the fallback for a worker started by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import ValidationError

from common.config import ConfigError, JobType

#: The environment variable with the JSON of one job type (all fields, the name included).
JOB_TYPE_ENV = "WORKER_JOB_TYPE"


def encode(job_type: JobType) -> str:
    """The value of `JOB_TYPE_ENV` for `job_type`."""
    return job_type.model_dump_json()


def handed_job_type(name: str, environ: Mapping[str, str] = os.environ) -> JobType | None:
    """The job type the scaler handed over, if any; ConfigError when it is broken or names another type."""
    text = environ.get(JOB_TYPE_ENV)
    if not text:
        return None
    try:
        job_type = JobType.model_validate_json(text)
    except ValidationError as error:
        raise ConfigError(f"{JOB_TYPE_ENV}: not a valid job type: {error.errors()[0]['msg']}") from error
    if job_type.name != name:
        raise ConfigError(f"{JOB_TYPE_ENV} describes job type {job_type.name!r}, not {name!r}")
    return job_type
