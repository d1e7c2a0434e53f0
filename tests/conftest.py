"""Fixtures shared by every test: a private RabbitMQ vhost and config files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.broker import Broker, broker_is_up, create_vhost, delete_vhost


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault suite's table (fault, rows sent/processed, duplicates, lost, recovery)."""
    from tests.support import fault_report

    if not fault_report.ROWS:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(fault_report.markdown_table())
    terminalreporter.write_line(f"(also written to {fault_report.write_artifact()})")
