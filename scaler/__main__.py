"""`python -m scaler`: run the control loop and its web server, or one of the subcommands.

python -m scaler [--backend local|kubernetes] [--host H] [--port P] [--tick S]
python -m scaler render-job <job-type>      # the Kubernetes Job manifest, as YAML (dry run)
python -m scaler status [--url U] [--watch]  # terminal summary (./manage.sh status / watch)
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from common.config import DEFAULT_STOP_GRACE_SECONDS, ConfigError
from common.env import SettingsError
from common.settings import (
    jobs_config_path,
    metrics_address,
    rabbitmq_api_urls,
    rabbitmq_url,
    rabbitmq_urls,
    redact_urls,
)
from scaler.settings import ScalerSettings

if TYPE_CHECKING:
    from common.config_watch import ConfigWatcher
    from scaler.backends.base import Backend
    from scaler.leader import LeaseElector
    from scaler.operator_controls import Controls


def _run(args: argparse.Namespace) -> int:
    import uvicorn
    from prometheus_client import start_http_server

    from common.auth import AuthSettings, describe_rule
    from common.config_watch import ConfigWatcher
    from common.queue_check import check_declarations
    from scaler.loop import Scaler
    from scaler.queue_stats import QueueStatsSource
    from scaler.web import create_app
    from scaler.worker_channel import WorkerChannel

    # Every setting is read before anything starts: a bad value or a placeholder token stops the scaler here.
    auth = AuthSettings.from_environment()
    settings = _settings(args)
    stats = QueueStatsSource(rabbitmq_api_urls(), rabbitmq_url())
    try:
        watcher = ConfigWatcher(jobs_config_path(), check=lambda config: check_declarations(config, stats.declared()))
    except ConfigError as error:
        print(f"scaler: cannot start: {error}", file=sys.stderr)
        return 2
    backend, controls, elector = _backend(settings, watcher)
    channel = WorkerChannel(rabbitmq_urls())
    scaler = Scaler(
        watcher,
        backend,
        stats,
        channel,
        is_leader=elector.is_leader if elector else (lambda: True),
        settings=settings,
        controls=controls,
    )
    if settings.wake_ups:
        channel.on_wake = scaler.wake
    channel.start()
    loop = threading.Thread(target=scaler.run, name="control-loop", daemon=True)
    loop.start()
    logging.getLogger("scaler").info(
        "scaler on http://%s:%d (dashboard), broker %s, management API %s, config %s, budget %s, %s",
        settings.host,
        settings.port,
        redact_urls(rabbitmq_urls()),
        redact_urls(rabbitmq_api_urls()),
        watcher.path,
        _describe_budget(settings),
        describe_rule(auth),
    )
    try:
        address = metrics_address()  # metrics only, without the token (common.settings)
        if address is not None:
            start_http_server(address[1], addr=address[0])
        # No proxy-header rewriting: the client address must be the socket's (see common.auth).
        uvicorn.run(
            create_app(scaler, settings, auth=auth),
            host=settings.host,
            port=settings.port,
            access_log=False,
            log_level="warning",
            proxy_headers=False,
        )
    finally:
        scaler.stop()
        loop.join(timeout=60)
        if elector:  # the Lease is handed back only once the loop can no longer act
            elector.stop(release=not loop.is_alive())
        channel.close()
        backend.close()
    return 0


def _settings(args: argparse.Namespace) -> ScalerSettings:
    """The environment's settings, with what the command line says on top."""
    settings = ScalerSettings.from_environment()
    overrides = {"backend": args.backend, "host": args.host, "port": args.port, "tick_seconds": args.tick}
    return replace(settings, **{key: value for key, value in overrides.items() if value is not None})


def _backend(settings: ScalerSettings, watcher: ConfigWatcher) -> tuple[Backend, Controls, LeaseElector | None]:
    """The backend, where the pause/drain set is kept, and (Kubernetes) the leader elector."""
    from scaler.operator_controls import Controls, FileControlStore, LeaseControlStore

    if settings.backend != "kubernetes":
        from scaler.backends.local import LocalBackend

        store = FileControlStore(settings.state_dir / "controls.json")
        backend = LocalBackend(settings.state_dir, settings.local, configured=lambda: watcher.config.job_types.values())
        return backend, Controls(store, settings.controls_refresh_seconds), None
    from kubernetes import client

    from scaler.backends.kubernetes import KubernetesBackend
    from scaler.leader import LeaseElector

    elector = LeaseElector.from_environment(settings.kubernetes).start() if settings.leader_election else None
    backend = KubernetesBackend.from_environment(elector, settings.backoff, settings.kubernetes)
    store = LeaseControlStore(client.ApiClient(), backend.namespace, settings.controls_lease)
    return backend, Controls(store, settings.controls_refresh_seconds), elector


def _describe_budget(settings: ScalerSettings) -> str:
    budget = settings.budget
    parts = [f"{budget.max_workers} workers"] if budget.max_workers is not None else []
    parts += [f"{name} {total:g}" for name, total in budget.resources.items()]
    return ", ".join(parts) or "none"


def _render_job(args: argparse.Namespace) -> int:
    import yaml

    from common.config import load_config
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


def _stop_workers(args: argparse.Namespace) -> int:
    """Stop every local worker gracefully (SIGTERM, SIGKILL after the grace period): `./manage.sh down`."""
    import time

    from scaler.backends.local import LocalBackend

    settings = ScalerSettings.from_environment()
    backend = LocalBackend(settings.state_dir, settings.local)
    deadline = time.monotonic() + args.grace + 5
    while live := [w for w in backend.list_workers() if not w.state.finished]:
        if time.monotonic() > deadline:
            print(f"scaler: {len(live)} worker(s) still running", file=sys.stderr)
            return 1
        for worker in live:
            backend.terminate(worker, None)
        time.sleep(0.3)
    return 0


def _scaler_url(args: argparse.Namespace) -> str:
    return args.url or f"http://127.0.0.1:{ScalerSettings.from_environment().port}"


def _status(args: argparse.Namespace) -> int:
    from common.auth import client_token
    from scaler.terminal import main

    return main(_scaler_url(args), args.watch, client_token())


def _control(args: argparse.Namespace) -> int:
    """POST /api/job-types/{type}/{action} with the token, and say what happened."""
    import httpx

    from common.auth import client_token

    token = client_token()
    url = f"{_scaler_url(args).rstrip('/')}/api/job-types/{args.job_type}/{args.action}"
    try:
        answer = httpx.post(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)
    except httpx.HTTPError as error:
        print(f"scaler: {url} is not answering: {error}", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"scaler: {answer.status_code}: {answer.json().get('error', answer.text)}", file=sys.stderr)
        return 1
    print(f"{args.job_type}: {args.action} {'requested' if args.action == 'retry' else 'in force'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaler", description="Autoscale workers to their queues.")
    parser.add_argument("--backend", choices=["local", "kubernetes"], help="default: $SCALER_BACKEND or local")
    parser.add_argument("--host", help="default: $SCALER_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: $SCALER_PORT or 8080")
    parser.add_argument("--tick", type=float, help="seconds between ticks (default: $SCALER_TICK_SECONDS or 1)")
    parser.set_defaults(command=_run)
    commands = parser.add_subparsers(dest="subcommand")
    render = commands.add_parser("render-job", help="print the Kubernetes Job the scaler would create for a type")
    render.add_argument("job_type")
    render.set_defaults(command=_render_job)
    stop = commands.add_parser("stop-workers", help="stop every local worker gracefully (./manage.sh down)")
    stop.add_argument("--grace", type=float, default=DEFAULT_STOP_GRACE_SECONDS)
    stop.set_defaults(command=_stop_workers)
    status = commands.add_parser("status", help="print the scaler's status (from its /api/status)")
    status.add_argument("--url", help="default: http://127.0.0.1:$SCALER_PORT")
    status.add_argument("--watch", action="store_true", help="refresh every second")
    status.set_defaults(command=_status)
    control = commands.add_parser("control", help="pause, resume, drain or retry a job type (./manage.sh pause T)")
    control.add_argument("action", choices=["pause", "resume", "drain", "retry"])
    control.add_argument("job_type")
    control.add_argument("--url", help="default: http://127.0.0.1:$SCALER_PORT")
    control.set_defaults(command=_control)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return args.command(args)
    except SettingsError as error:
        print(f"scaler: cannot start: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
