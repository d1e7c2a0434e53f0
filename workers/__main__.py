"""`python -m workers <job-type>`: run one worker for that job type until it is told to stop.

Exit codes: 0 after a graceful stop, 2 when the job type, its handler or the
worker's settings are unusable (nothing to retry: the scaler shows the
message and does not loop), 3 when a handler ran past the type's
`timeout_seconds` (its rows were failed; the process must be replaced).
"""

from __future__ import annotations

import argparse
import sys

from jobtypes.config import ConfigError, load_config
from jobtypes.settings import jobs_config_path
from workers import jsonlog
from workers.handlers import HandlerNotFound, load_handler
from workers.runtime import build_worker
from workers.settings import SettingsError, WorkerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run one worker for a job type.")
    parser.add_argument("job_type", help="a job type from jobs.config.json")
    args = parser.parse_args(argv)
    try:
        config = load_config(jobs_config_path())
    except ConfigError as error:
        print(f"worker: cannot start: {error}", file=sys.stderr)
        return 2
    job_type = config.get(args.job_type)
    if job_type is None:
        print(
            f"worker: unknown job type {args.job_type!r} in {config.source}; known: {', '.join(config.job_types)}",
            file=sys.stderr,
        )
        return 2
    try:
        handler = load_handler(job_type)
        settings = WorkerSettings.from_environment(job_type.name)
    except (HandlerNotFound, SettingsError) as error:
        print(f"worker: cannot start: {error}", file=sys.stderr)
        return 2
    logger = jsonlog.configure(settings.worker_id, job_type.name, settings.log_level)
    return build_worker(job_type, handler, settings, logger).run()


if __name__ == "__main__":
    sys.exit(main())
