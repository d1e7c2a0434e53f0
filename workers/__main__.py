"""`python -m workers <job-type>`: run one worker for that job type until it is told to stop.

The job type's settings come from the scaler that started the worker
(`WORKER_JOB_TYPE`, see common.handoff) or, for a worker started by hand,
from the jobs config. Exit codes: 0 after a graceful stop, 2 when the job
type, its handler or the worker's settings are unusable (nothing to retry:
the scaler shows the message and does not loop), 3 when a handler ran past
the type's `timeout_seconds` (its rows were failed; the process must be
replaced).
"""

from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, JobType, load_config
from common.env import SettingsError
from common.handoff import handed_job_type
from common.settings import jobs_config_path, rabbitmq_urls
from workers import jsonlog
from workers.handlers import Handler, HandlerNotFound, load_handler
from workers.runtime import build_worker
from workers.settings import WorkerSettings


class CannotStart(Exception):
    """The job type or its handler is unusable; the message says why."""


def prepare(name: str) -> tuple[JobType, Handler]:
    """The job type's settings and its imported handler; raises CannotStart."""
    try:
        job_type = handed_job_type(name) or _from_config_file(name)
        return job_type, load_handler(job_type)
    except (ConfigError, HandlerNotFound) as error:
        raise CannotStart(str(error)) from error


def _from_config_file(name: str) -> JobType:
    config = load_config(jobs_config_path())
    job_type = config.get(name)
    if job_type is None:
        raise ConfigError(f"unknown job type {name!r} in {config.source}; known: {', '.join(config.job_types)}")
    return job_type


def serve(job_type: JobType, handler: Handler) -> int:
    """Run the worker named by WORKER_ID (or a name of its own) until it stops; returns its exit code."""
    try:
        settings = WorkerSettings.from_environment(job_type.name)
        rabbitmq_urls()  # every node's URL checked before the worker starts
    except SettingsError as error:
        print(f"worker: cannot start: {error}", file=sys.stderr)
        return 2
    logger = jsonlog.configure(settings.worker_id, job_type.name, settings.log_level)
    sys.setswitchinterval(settings.switch_interval_seconds)
    return build_worker(job_type, handler, settings, logger).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run one worker for a job type.")
    parser.add_argument("job_type", help="a job type from jobs.config.json")
    args = parser.parse_args(argv)
    try:
        job_type, handler = prepare(args.job_type)
    except CannotStart as error:
        print(f"worker: cannot start: {error}", file=sys.stderr)
        return 2
    return serve(job_type, handler)


if __name__ == "__main__":
    sys.exit(main())
