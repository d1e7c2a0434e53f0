"""A real PostgreSQL server (Debian's binaries, started by pytest-postgresql) for tests and benchmarks.

`initdb` and `pg_ctl` refuse to run as root, and test machines often are
root: a small wrapper runs pg_ctl as the `postgres` OS user then, in a
directory that user owns. The tests' fixtures (tests/conftest.py) hold one
server for the session: `postgres_url` is its `postgres` database (a
SQLAlchemy URL); `fresh_postgres_url` is a new, empty database per test,
dropped after it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pytest_postgresql.executors.proc import PostgreSQLExecutor

from harness.processes import free_port
from harness.waiting import wait_until

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"


def _as_postgres(directory: Path) -> None:
    """Hand `directory` to the postgres OS user when we are root (initdb refuses root)."""
    if os.getuid() == 0:
        shutil.chown(directory, OS_USER, OS_USER)


def _pg_ctl_wrapper(directory: Path) -> Path:
    script = directory / "pg_ctl"
    run_as = f"runuser -u {OS_USER} -- " if os.getuid() == 0 else ""
    script.write_text(f'#!/bin/sh\nexec {run_as}"{PG_BIN / "pg_ctl"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def _accepts_connections(executor: PostgreSQLExecutor) -> bool:
    """pg_ctl -w can return while the server still answers 'the database system is starting up'."""
    try:
        psycopg.connect(f"host={executor.host} port={executor.port} user=postgres dbname=postgres").close()
    except psycopg.OperationalError:
        return False
    return True


@contextmanager
def running_postgres() -> Iterator[PostgreSQLExecutor]:
    """A PostgreSQL server in a temporary directory for as long as the block runs (tests and benchmarks)."""
    if not (PG_BIN / "pg_ctl").exists():
        raise RuntimeError(f"PostgreSQL is not installed at {PG_BIN} (./manage.sh test installs Debian's postgresql)")
    base = Path(tempfile.mkdtemp(prefix="autoscaler-pg-"))
    base.chmod(0o755)
    _as_postgres(base)
    executor = PostgreSQLExecutor(
        executable=str(_pg_ctl_wrapper(base)),
        host="127.0.0.1",
        port=free_port(),
        datadir=str(base / "data"),
        unixsocketdir=str(base),
        logfile=str(base / "postgres.log"),
        startparams="-w",
        postgres_options="-c fsync=off -c listen_addresses=127.0.0.1",
        dbname="postgres",
        user="postgres",
    )
    executor.start()
    try:
        # pg_ctl -w can return while a busy machine's server still answers "the database system is starting up".
        wait_until(
            lambda: _accepts_connections(executor), timeout=60, interval=0.1, what="PostgreSQL to accept connections"
        )
        yield executor
    finally:
        executor.stop()
        shutil.rmtree(base, ignore_errors=True)
