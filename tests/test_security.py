"""Nobody gets in without the token, nothing changes state unauthenticated, no secret leaks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import psutil
import pytest

from tests.support.broker import Broker, create_user, delete_user
from tests.support.stack import Stack
from tests.support.waiting import wait_until

TOKEN = "tok-" + secrets.token_hex(8)
PASSWORD = "pw-" + secrets.token_hex(8)
USER = "sec-" + secrets.token_hex(3)


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    create_user(broker, USER, PASSWORD)
    vhost = quote(broker.vhost, safe="")
    created = Stack(
        broker,
        tmp_path_factory.mktemp("security"),
        {"sleep": {"handler": "sleep", "threshold": 1, "max_workers": 2, "idle_seconds": 2, "env": {"SLEEP_MS": "20"}}},
        tick_seconds=0.5,
        env={
            "PRODUCER_TOKEN": TOKEN,
            "RABBITMQ_URL": f"amqp://{USER}:{PASSWORD}@127.0.0.1:5672/{vhost}",
            "RABBITMQ_API_URL": f"http://{USER}:{PASSWORD}@127.0.0.1:15672/api",
        },
    )
    created.start()
    yield created
    created.stop()
    delete_user(USER)


def listening_addresses(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_services_bind_loopback_by_default(stack: Stack) -> None:
    assert listening_addresses(stack.producer.pid) == {"127.0.0.1"}
    assert listening_addresses(stack.scaler.pid) == {"127.0.0.1"}


def test_uploads_need_the_token_also_through_the_dashboard(stack: Stack) -> None:
    body = b"n\n1\n2\n"
    assert stack.upload(body, "sleep").status_code == 401
    assert stack.upload(body, "sleep", headers={"Authorization": "Bearer " + TOKEN[:-1]}).status_code == 401
    proxied = httpx.post(f"{stack.scaler_url}/api/upload", files={"file": ("x.csv", body)}, data={"job_type": "sleep"})
    assert proxied.status_code == 401
    ok = httpx.post(
        f"{stack.scaler_url}/api/upload",
        files={"file": ("x.csv", body)},
        data={"job_type": "sleep"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert ok.status_code == 200 and ok.json()["rows"] == 2


@pytest.mark.parametrize(
    "path", ["/", "/api/status", "/api/history", "/api/stream", "/metrics", "/healthz", "/api/workers/x/log"]
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_scaler_endpoints_change_nothing(stack: Stack, path: str, method: str) -> None:
    assert httpx.request(method, f"{stack.scaler_url}{path}").status_code == 405


def test_no_secret_in_logs_status_metrics_or_page(stack: Stack) -> None:
    stack.upload(
        b"n\n" + b"".join(b"%d\n" % i for i in range(20)), "sleep", headers={"Authorization": f"Bearer {TOKEN}"}
    ).raise_for_status()
    stack.wait_workers("sleep", lambda s: s["workers"] >= 1, timeout=20, what="a worker")
    wait_until(lambda: sum(stack.processed().values()) >= 20, timeout=30, what="rows processed")
    places = {
        "producer log": stack.producer.log(),
        "scaler log": stack.scaler.log(),
        "worker logs": "".join(p.read_text() for p in (stack.state_dir / "logs").glob("*.log")),
        "status API": httpx.get(f"{stack.scaler_url}/api/status").text,
        "scaler metrics": httpx.get(f"{stack.scaler_url}/metrics").text,
        "producer metrics": httpx.get(f"{stack.producer_url}/metrics").text,
        "producer health": httpx.get(f"{stack.producer_url}/healthz").text,
        "job types": httpx.get(f"{stack.producer_url}/job-types").text,
        "dashboard": httpx.get(f"{stack.scaler_url}/").text + httpx.get(f"{stack.scaler_url}/static/app.js").text,
    }
    assert "***" in places["scaler log"], "the broker URL is logged, redacted"
    for place, text in places.items():
        assert TOKEN not in text, f"the producer token appears in the {place}"
        assert PASSWORD not in text, f"the broker password appears in the {place}"
