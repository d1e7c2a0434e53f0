"""Fixtures shared by every test: a private RabbitMQ vhost, a PostgreSQL server, an emulated Kubernetes API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from pytest_postgresql.executors.proc import PostgreSQLExecutor

from harness.broker import Broker, broker_is_up, create_vhost, delete_vhost
from harness.cluster import Cluster, running_cluster
from harness.k8s_emulator import KubernetesEmulator
from harness.postgres import PG_BIN, running_postgres


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A fresh vhost on the real RabbitMQ that `./manage.sh test` started."""
    if not broker_is_up():
        pytest.fail(
            "RabbitMQ's management API is not reachable on 127.0.0.1:15672; run the suite with ./manage.sh test"
        )
    created = create_vhost()
    yield created
    delete_vhost(created)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's own three-node RabbitMQ cluster on 5682-5684, started as `./manage.sh up --rabbitmq-nodes 3`
    starts one (harness/cluster.py); only the tests that ask for it start it."""
    with running_cluster(tmp_path_factory.mktemp("rabbitmq-cluster")) as started:
        yield started


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


@pytest.fixture()
def emulator() -> Iterator[KubernetesEmulator]:
    """A fresh emulated API server for one test."""
    created = KubernetesEmulator()
    yield created
    created.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-results",
        action="store_true",
        help="write the fault table and the replay comparison to bench/results/ for ./manage.sh readme "
        "(without it a run leaves the committed results files, and so the README check, as they were)",
    )


@pytest.fixture(scope="session")
def record_results(pytestconfig: pytest.Config) -> bool:
    return bool(pytestconfig.getoption("--record-results"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the fault suite's table (fault, rows sent/processed, duplicates, lost, recovery)."""
    from tests.support import fault_report

    if not fault_report.ROWS:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(fault_report.markdown_table())
    for path in fault_report.write_artifact(record=config.getoption("--record-results")):
        terminalreporter.write_line(f"(also written to {path})")
