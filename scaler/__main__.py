"""`python -m scaler`: run the control loop and its web server, or one of the subcommands.

python -m scaler [--backend local|kubernetes] [--host H] [--port P] [--tick S]
python -m scaler render-job <job-type>      # the Kubernetes Job manifest, as YAML (dry run)
python -m scaler status [--url U] [--watch]  # terminal summary (./manage.sh status / watch)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from jobtypes.config import ConfigError
from jobtypes.settings import REPO_ROOT, jobs_config_path, rabbitmq_api_url, rabbitmq_url, redact_url


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from jobtypes.config_watch import ConfigWatcher
    from scaler.loop import Scaler
    from scaler.queue_stats import QueueStatsSource
    from scaler.web import create_app
    from scaler.worker_channel import WorkerChannel

    try:
        watcher = ConfigWatcher(jobs_config_path())
    except ConfigError as error:
        print(f"scaler: cannot start: {error}", file=sys.stderr)
        return 2
    elector = None
    if args.backend == "kubernetes":
        from scaler.backends.kubernetes import KubernetesBackend
        from scaler.leader import LeaseElector

        backend = KubernetesBackend.from_environment()
        if os.environ.get("SCALER_LEADER_ELECTION", "true").lower() not in ("0", "false", "no"):
            elector = LeaseElector.from_environment()
            elector.start()
    else:
        from scaler.backends.local import LocalBackend

        backend = LocalBackend(_state_dir())
    channel = WorkerChannel(rabbitmq_url()).start()
    scaler = Scaler(
        watcher,
        backend,
        QueueStatsSource(rabbitmq_api_url(), rabbitmq_url()),
        channel,
        tick_seconds=args.tick,
        is_leader=elector.is_leader if elector else (lambda: True),
    )
    loop = threading.Thread(target=scaler.run, name="control-loop", daemon=True)
    loop.start()
    logging.getLogger("scaler").info(
        "scaler on http://%s:%d (dashboard), broker %s, management API %s, config %s",
        args.host,
        args.port,
        redact_url(rabbitmq_url()),
        redact_url(rabbitmq_api_url()),
        watcher.path,
    )
    try:
        # No proxy-header rewriting: the client address must be the socket's (see jobtypes.auth).
        uvicorn.run(
            create_app(scaler),
            host=args.host,
            port=args.port,
            access_log=False,
            log_level="warning",
            proxy_headers=False,
        )
    finally:
        scaler.stop()
        loop.join(timeout=10)
        channel.close()
        backend.close()
        if elector:
            elector.stop()
    return 0


def _render_job(args: argparse.Namespace) -> int:
    import yaml

    from jobtypes.config import load_config
    from scaler.backends.kubernetes_manifests import render_job_manifest

    try:
        config = load_config(jobs_config_path())
    except ConfigError as error:
        print(f"scaler: {error}", file=sys.stderr)
        return 2
    job_type = config.get(args.job_type)
    if job_type is None:
        print(f"scaler: unknown job type {args.job_type!r}; known: {', '.join(config.job_types)}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(render_job_manifest(job_type), sort_keys=False), end="")
    return 0


def _state_dir() -> Path:
    return Path(os.environ.get("SCALER_STATE_DIR", REPO_ROOT / ".run" / "scaler"))


def _stop_workers(args: argparse.Namespace) -> int:
    """Stop every local worker gracefully (SIGTERM, SIGKILL after the grace period): `./manage.sh down`."""
    import time

    from scaler.backends.local import LocalBackend

    backend = LocalBackend(_state_dir())
    deadline = time.monotonic() + args.grace + 5
    while live := [w for w in backend.list_workers() if not w.state.finished]:
        if time.monotonic() > deadline:
            print(f"scaler: {len(live)} worker(s) still running", file=sys.stderr)
            return 1
        for worker in live:
            backend.terminate(worker, None)
        time.sleep(0.3)
    return 0


def _status(args: argparse.Namespace) -> int:
    from scaler.terminal import main

    return main(args.url, args.watch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaler", description="Autoscale workers to their queues.")
    parser.add_argument("--backend", choices=["local", "kubernetes"], default=os.environ.get("SCALER_BACKEND", "local"))
    parser.add_argument("--host", default=os.environ.get("SCALER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SCALER_PORT", "8080")))
    parser.add_argument(
        "--tick",
        type=float,
        default=float(os.environ.get("SCALER_TICK_SECONDS", "1")),
        help="seconds between ticks (default 1)",
    )
    parser.set_defaults(command=_run)
    commands = parser.add_subparsers(dest="subcommand")
    render = commands.add_parser("render-job", help="print the Kubernetes Job the scaler would create for a type")
    render.add_argument("job_type")
    render.set_defaults(command=_render_job)
    stop = commands.add_parser("stop-workers", help="stop every local worker gracefully (./manage.sh down)")
    stop.add_argument("--grace", type=float, default=30.0)
    stop.set_defaults(command=_stop_workers)
    status = commands.add_parser("status", help="print the scaler's status (from its /api/status)")
    status.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('SCALER_PORT', '8080')}")
    status.add_argument("--watch", action="store_true", help="refresh every second")
    status.set_defaults(command=_status)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return args.command(args)


if __name__ == "__main__":
    sys.exit(main())
