"""A real PostgreSQL server for the test session (Debian's binaries, started by pytest-postgresql).

`initdb` and `pg_ctl` refuse to run as root, and test machines often are
root: a small wrapper runs pg_ctl as the `postgres` OS user then, in a
directory that user owns. Import the fixtures into a test module:

    from tests.support.postgres import fresh_postgres_url, postgres_server, postgres_url  # noqa: F401

`postgres_url` is the session server's `postgres` database (a SQLAlchemy
URL); `fresh_postgres_url` is a new, empty database per test, dropped after it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql.executors.proc import PostgreSQLExecutor

from tests.support.processes import free_port
from tests.support.waiting import wait_until

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
    _wait_accepting(executor)
    try:
        wait_until(lambda: _accepts_connections(executor), timeout=60, what="PostgreSQL to accept connections")
        yield executor
    finally:
        executor.stop()
        shutil.rmtree(base, ignore_errors=True)


def _wait_accepting(executor: PostgreSQLExecutor, timeout: float = 60) -> None:
    """Until the server accepts connections: on a busy machine it can still answer "the database system is starting
    up" after pg_ctl returned, and the session's first test would fail on that."""

    def accepting() -> bool:
        try:
            psycopg.connect(f"host={executor.host} port={executor.port} user=postgres dbname=postgres").close()
        except psycopg.OperationalError:
            return False
        return True

    wait_until(accepting, timeout=timeout, interval=0.1, what="PostgreSQL to accept connections")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgreSQLExecutor]:
    if not (PG_BIN / "pg_ctl").exists():
        pytest.fail(f"PostgreSQL is not installed at {PG_BIN} (./manage.sh test installs Debian's postgresql)")
    with running_postgres() as executor:
        yield executor


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgreSQLExecutor) -> str:
    """The session server's maintenance database (create your own databases in it)."""
    return f"postgresql+psycopg://postgres@{postgres_server.host}:{postgres_server.port}/postgres"


@pytest.fixture()
def fresh_postgres_url(postgres_server: PostgreSQLExecutor) -> Iterator[str]:
    """A new database on the session's server, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = f"host={postgres_server.host} port={postgres_server.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@{postgres_server.host}:{postgres_server.port}/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
