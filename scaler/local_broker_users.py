"""`./manage.sh up`'s broker users: create them on the local RabbitMQ and keep each one's URL in a 0600 file.

The users are those of scaler.broker_users for the config. Each URL (with
its password) is written once under the directory (mode 0700) and reused on
later runs, so restarting the stack never changes a password under a running
worker:

    <dir>/producer.url      the producer's RABBITMQ_URLS
    <dir>/scaler.url        the scaler's RABBITMQ_URLS
    <dir>/scaler-api.url    the scaler's RABBITMQ_API_URLS (the monitoring-tagged user)
    <dir>/workers/<type>.url  what the local backend hands that type's workers (SCALER_WORKER_CREDENTIALS_DIR)

Each file holds one URL per broker node, comma-separated, in the order of
RABBITMQ_URLS (AMQP) or RABBITMQ_ADMIN_API_URLS (management API). The
administrator's credential that creates them (RABBITMQ_ADMIN_API_URLS or
RABBITMQ_ADMIN_API_URL, default the development broker's guest on loopback) is
used here only; users belong to the whole cluster, so the first node that
answers creates them.

python -m scaler.local_broker_users DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common.config import ConfigError, load_config
from common.env import SettingsError
from common.settings import API_SCHEMES, DEFAULT_RABBITMQ_API_URL, jobs_config_path, node_urls, rabbitmq_urls
from scaler.broker_users import (
    DEFAULT_PREFIX,
    BrokerUser,
    BrokerUserError,
    Role,
    apply,
    broker_users,
    new_password,
    vhost_of,
)
from scaler.broker_users import with_credentials as credentials

WORKERS = "workers"


def url_files(directory: Path, user: BrokerUser) -> dict[str, Path]:
    """Which URL files a user gets: 'amqp' (and 'api' for the scaler)."""
    if user.role is Role.WORKER:
        return {"amqp": directory / WORKERS / f"{user.job_type}.url"}
    files = {"amqp": directory / f"{user.role}.url"}
    if user.role is Role.SCALER:
        files["api"] = directory / "scaler-api.url"
    return files


def _stored_password(path: Path) -> str | None:
    try:
        password = urlsplit(path.read_text().strip().split(",")[0]).password
    except OSError:
        return None
    return unquote(password) if password else None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text + "\n")
    os.chmod(path, 0o600)


def _apply_on_any(admin_api_urls: tuple[str, ...], vhost: str, passwords: dict[BrokerUser, str]) -> None:
    """Create the users through the first node whose management API does it (users belong to the cluster)."""
    failures = []
    for url in admin_api_urls:
        try:
            apply(url, vhost, passwords)
            return
        except BrokerUserError as error:
            failures.append(str(error))
    raise BrokerUserError("; ".join(failures))


def ensure(
    directory: Path, admin_api_urls: tuple[str, ...], amqp_urls: tuple[str, ...], prefix: str = DEFAULT_PREFIX
) -> list[str]:
    """Create or update the users and their URL files (every node's URL in each); returns the users' names."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    users = broker_users(load_config(jobs_config_path()), prefix)
    passwords = {user: _stored_password(url_files(directory, user)["amqp"]) or new_password() for user in users}
    _apply_on_any(admin_api_urls, vhost_of(amqp_urls[0]), passwords)
    for user, password in passwords.items():
        files = url_files(directory, user)
        _write_private(files["amqp"], ",".join(credentials(url, user.name, password) for url in amqp_urls))
        if "api" in files:
            _write_private(files["api"], ",".join(credentials(url, user.name, password) for url in admin_api_urls))
    return [user.name for user in users]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaler.local_broker_users", description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        admin = node_urls("RABBITMQ_ADMIN_API_URLS", "RABBITMQ_ADMIN_API_URL", DEFAULT_RABBITMQ_API_URL, API_SCHEMES)
        names = ensure(args.directory, admin, rabbitmq_urls())
    except (BrokerUserError, ConfigError, SettingsError, OSError) as error:
        print(f"[broker-users] error: {error}", file=sys.stderr)
        return 1
    print(f"[broker-users] {', '.join(names)} ready; their URLs are in {args.directory}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
