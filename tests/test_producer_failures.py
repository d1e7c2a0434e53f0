"""The broker going away, and tokens: never a 200 for rows that are not in the queue, nobody without the token."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import httpx
import pytest

from common.config import JobType
from harness.broker import Broker
from harness.stack import Stack
from harness.waiting import wait_until
from producer.row_publisher import PublishControl, _ConfirmedRun, file_rows
from tests.support.proxy import CuttableProxy, producer_behind

HEADER = b"Date,Item Description,Quantity,Amount\n"


def sample_rows(count: int) -> bytes:
    return HEADER + b"".join(b"2024-01-01,Item %d,1,2.50\n" % i for i in range(count))


@pytest.fixture()
def proxied(broker: Broker, tmp_path) -> Iterator[tuple[Stack, CuttableProxy]]:
    proxy = CuttableProxy()
    stack = producer_behind(proxy, broker, tmp_path, {"sleep": {}})
    yield stack, proxy
    stack.stop()
    proxy.close()


def test_broker_unreachable_gives_503_and_health_says_so(proxied: tuple[Stack, CuttableProxy], broker: Broker) -> None:
    stack, proxy = proxied
    proxy.cut()
    response = stack.upload(sample_rows(10), "sleep")
    assert response.status_code == 503
    answer = response.json()
    assert answer["confirmed"] == 0 and "RabbitMQ" in answer["error"]
    wait_until(
        lambda: stack.get(f"{stack.producer_url}/healthz").json()["broker"]["reachable"] is False,
        timeout=10,
        what="healthz to report the broker unreachable",
    )
    not_ready = stack.get(f"{stack.producer_url}/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["broker"]["error"]
    assert stack.get(f"{stack.producer_url}/livez").status_code == 200, "liveness does not depend on the broker"
    proxy.restore()
    wait_until(lambda: stack.get(f"{stack.producer_url}/readyz").status_code == 200, timeout=15, what="ready again")
    response = stack.upload(sample_rows(10), "sleep")
    assert response.status_code == 200, response.text
    assert broker.queue_depth(stack.queue_of("sleep")) == 10


def test_broker_lost_mid_upload_reports_only_confirmed_rows(
    proxied: tuple[Stack, CuttableProxy], broker: Broker
) -> None:
    stack, proxy = proxied
    queue = stack.queue_of("sleep")
    rows = 150_000
    proxy.cut_after(2_000_000)  # a few thousand rows into the upload
    response = stack.upload(sample_rows(rows), "sleep")
    answer = response.json()
    assert response.status_code == 503, answer
    confirmed = answer["confirmed"]
    in_queue = broker.queue_depth(queue)
    assert 0 < confirmed < rows
    # Every confirmed row is in the queue; at most the unconfirmed window may be there too.
    assert confirmed <= in_queue <= confirmed + 2000, (confirmed, in_queue)
    assert f"{confirmed} of {rows} rows were confirmed" in answer["error"]


def test_token_required_when_set(broker: Broker, tmp_path) -> None:
    token = "s3cret-token-value"
    # Loopback clients need it like everyone else (tests/test_security.py has the whole table).
    stack = Stack(broker, tmp_path, {"sleep": {}}, env={"PRODUCER_TOKEN": token})
    stack.start_producer()
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": token},
            {"Authorization": f"Basic {token}"},
        ):
            response = httpx.post(
                f"{stack.producer_url}/submit/sleep",
                content=sample_rows(1),
                headers={"Content-Type": "text/csv", **headers},  # not stack.upload: it sends the right token
            )
            assert response.status_code == 401, headers
            assert "token" in response.json()["error"]
        multipart = httpx.post(f"{stack.producer_url}/upload", files={"file": ("x.csv", sample_rows(1))})
        assert multipart.status_code == 401
        with pytest.raises(httpx.HTTPStatusError):  # refused before publishing: not even declared
            broker.queue(stack.queue_of("sleep"))

        response = stack.upload(sample_rows(3), "sleep", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert broker.queue_depth(stack.queue_of("sleep")) == 3
        assert token not in stack.producer.log()
    finally:
        stack.stop()


def test_unroutable_rows_never_count_as_confirmed(broker: Broker) -> None:
    """Rows the broker returns (no queue to route to) are acked after the return: they must not be counted."""
    missing = JobType(name="sleep", queue=f"never-declared-{uuid.uuid4().hex[:6]}")
    bodies = io.BytesIO(b"".join(b'%d {"n": "%d"}\n' % (i + 2, i) for i in range(50)))
    run = _ConfirmedRun(missing, "u1", file_rows(bodies), 50, 0, PublishControl(), node_url=broker.amqp_url)
    result = run.run(first=1)
    assert result.error is not None and "could not route row u1:1" in result.error
    assert result.confirmed == 0 and result.confirmed_through == 0
