"""Least privilege on the broker: the whole stack runs with its own users, and a worker can do its job, nothing else.

Real RabbitMQ, real processes: the producer, the scaler (its management API
user tagged `monitoring` only) and the workers the scaler's local backend
starts each use the user scaler.broker_users derives for them, created for
this test under names of its own and deleted after it. The worker's
credential is read from the running worker process itself, so the test checks
what the scaler really handed it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pika
import pytest

from common.config import JobType, load_config
from common.control_messages import CONTROL_EXCHANGE, stop_routing_key
from common.outcomes import OUTCOMES_QUEUE
from common.queues import ROUTES_EXCHANGE
from harness.broker import API, AUTH, Broker
from harness.processes import REPO
from harness.stack import Stack
from harness.waiting import wait_until
from scaler.backends.kubernetes_manifests import ClusterSettings, render_job_manifest
from scaler.backends.local import LocalBackend
from scaler.backends.local_settings import LocalSettings
from scaler.broker_users import BrokerUser, Role, apply, broker_users, delete, new_password, with_credentials
from scaler.local_broker_users import ensure
from scaler.worker_channel import WorkerChannel

ROWS, RETRIED, DEAD = 12, 3, 2


def recorder(record: Path) -> dict:
    return {
        "handler": "tests.handlers.recorder",
        "threshold": 1,
        "max_workers": 1,
        "idle_seconds": 120,  # the worker stays up for the probes below
        "max_attempts": 2,
        "retry_delay_seconds": 0.1,
        "env": {"RECORD_FILE": str(record)},
    }


@pytest.fixture
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    types = {
        "work": recorder(tmp_path / "work.jsonl"),
        "other": recorder(tmp_path / "other.jsonl"),
    }
    stack = Stack(broker, tmp_path, types, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    users = {user: new_password() for user in broker_users(load_config(stack.config_path), f"t{uuid.uuid4().hex[:10]}")}
    apply(broker.api_url, broker.vhost, users)
    url = {user.name: with_credentials(broker.amqp_url, user.name, password) for user, password in users.items()}
    by_role = {(user.role, user.job_type): user for user in users}
    credentials = tmp_path / "worker-credentials"
    credentials.mkdir()
    for job_type in types:
        (credentials / f"{job_type}.url").write_text(url[by_role[Role.WORKER, job_type].name])
    scaler = by_role[Role.SCALER, None]
    stack.users = by_role
    try:
        stack.env["RABBITMQ_URL"] = url[by_role[Role.PRODUCER, None].name]
        stack.start_producer()
        stack.env.update(
            RABBITMQ_URL=url[scaler.name],
            RABBITMQ_API_URL=with_credentials(broker.api_url, scaler.name, users[scaler]),
            SCALER_WORKER_CREDENTIALS_DIR=str(credentials),
        )
        stack.start_scaler()
        yield stack
    finally:
        stack.stop()
        delete(broker.api_url, [user.name for user in users])


def refusal(url: str, action: Callable[[pika.adapters.blocking_connection.BlockingChannel], object]) -> int | None:
    """The reply code with which the broker closed the channel over `action`, None when it allowed it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        action(channel)
        return None
    except pika.exceptions.ChannelClosedByBroker as closed:
        return closed.reply_code
    finally:
        if connection.is_open:
            connection.close()


def process_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def test_each_component_runs_with_its_own_user_and_a_worker_can_do_its_job_and_nothing_else(stack: Stack) -> None:
    rows = ["n,fail_until"] + [
        f"{n},{2 if n <= RETRIED else 9 if n <= RETRIED + DEAD else 0}" for n in range(1, ROWS + 1)
    ]
    upload = stack.upload("\n".join(rows).encode(), "work")
    assert upload.status_code == 200, upload.text
    upload_id = upload.json()["upload_id"]

    def finished() -> dict | None:
        response = httpx.get(f"{stack.producer_url}/uploads/{upload_id}", headers=stack.auth_headers(), timeout=10)
        record = response.json()
        return record if record["state"] == "done" else None

    # The scaler (monitoring user) saw the backlog and started a worker; the worker (its type's user) processed
    # the rows, retried and dead-lettered through the routes exchange, and its outcome reports reached the tracker.
    record = wait_until(finished, timeout=60, what="the upload to be done")
    assert (record["succeeded"], record["dead"]) == (ROWS - DEAD, DEAD)
    own, other = stack.queue_of("work"), stack.queue_of("other")
    assert stack.broker.queue_depth(f"{own}.dead") == DEAD
    assert wait_until(
        lambda: stack.type_status("work")["dead"] == DEAD, timeout=10, what="the dead count in the status"
    )

    pids = wait_until(stack.live_worker_pids, timeout=10, what="the worker to be alive")
    environment = process_environment(next(iter(pids.values())))
    worker = stack.users[Role.WORKER, "work"]
    assert urlsplit(environment["RABBITMQ_URLS"]).username == worker.name
    assert not {"RABBITMQ_URL", "RABBITMQ_API_URL", "SCALER_WORKER_CREDENTIALS_DIR", "PRODUCER_TOKEN"} & set(
        environment
    )
    worker_url = environment["RABBITMQ_URLS"]

    def publish(exchange: str, routing_key: str) -> Callable:
        return lambda channel: channel.basic_publish(exchange, routing_key, b"{}", mandatory=True)

    forbidden = {
        "purge the outcome queue": lambda channel: channel.queue_purge(OUTCOMES_QUEUE),
        "purge another type's queue": lambda channel: channel.queue_purge(other),
        "delete its own queue": lambda channel: channel.queue_delete(own),
        "route to another type's queue": publish(ROUTES_EXCHANGE, other),
        "route to another type's retry queue": publish(ROUTES_EXCHANGE, f"{other}.retry"),
        "publish through the default exchange": publish("", own),
        "publish to the control exchange": publish(CONTROL_EXCHANGE, "wake"),
        "consume the outcome reports": lambda channel: channel.basic_get(OUTCOMES_QUEUE),
    }
    assert {what: refusal(worker_url, action) for what, action in forbidden.items()} == dict.fromkeys(forbidden, 403)
    assert refusal(worker_url, publish(ROUTES_EXCHANGE, f"{own}.retry")) is None  # its own routes stay open

    scaler: BrokerUser = stack.users[Role.SCALER, None]
    user = httpx.get(f"{API}/users/{quote(scaler.name, safe='')}", auth=AUTH, timeout=10).json()
    assert user["tags"] in (["monitoring"], "monitoring"), "the scaler reads queue counts as a monitoring user"


def test_the_scaler_declares_every_type_a_refused_one_alone_failing(broker: Broker) -> None:
    """Workers declare nothing, so the scaler's channel declares each configured type's queues and routes; a queue
    that exists with other arguments is refused by the broker and logged, and neither stops the others nor the
    channel (a stop request still goes out)."""
    clash, good = JobType(name="clash", queue=f"clash-{uuid.uuid4().hex[:6]}"), JobType(name="good", queue="good-q")
    with broker.channel() as channel:
        channel.queue_declare(clash.queue, durable=True)  # no dead-letter arguments: the declaration will clash
        listen = channel.queue_declare("", exclusive=True).method.queue
        channel.exchange_declare(CONTROL_EXCHANGE, "direct", durable=True)
        channel.queue_bind(listen, CONTROL_EXCHANGE, routing_key=stop_routing_key("w1"))
        scaler = WorkerChannel((broker.amqp_url,)).start()
        try:
            scaler.declare([clash, good])
            wait_until(lambda: broker.queue("good-q.dead"), timeout=10, what="the good type's queues")
            scaler.request_stop("w1")
            wait_until(lambda: channel.basic_get(listen, auto_ack=True)[0], timeout=10, what="the stop request")
            assert scaler.health().connected
            with broker.channel() as probe:
                probe.confirm_delivery()
                probe.basic_publish(ROUTES_EXCHANGE, "good-q.retry", b"{}", mandatory=True)  # routed, or it raises
        finally:
            scaler.close()


def test_manage_sh_users_get_private_url_files_that_log_in_and_keep_their_passwords(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `./manage.sh up` runs (scaler.local_broker_users), with this test's own user names."""
    monkeypatch.setenv("JOBS_CONFIG", str(REPO / "jobs.config.json"))
    directory, prefix = tmp_path / "rabbitmq", f"t{uuid.uuid4().hex[:10]}"
    try:
        # Two nodes each: the users are created through the first API that answers (port 1: none), and every
        # file lists every node with the same user and password.
        admin = ("http://guest:guest@127.0.0.1:1/api", broker.api_url)
        nodes = (broker.amqp_url, broker.amqp_url.replace(":5672/", ":5692/"))
        names = ensure(directory, admin, nodes, prefix)
        files = sorted(path for path in directory.rglob("*") if path.is_file())
        assert [path.relative_to(directory).as_posix() for path in files] == [
            "producer.url",
            "scaler-api.url",
            "scaler.url",
            "workers/sales.url",
            "workers/sleep.url",
        ]
        assert {path.stat().st_mode & 0o777 for path in files} == {0o600}
        assert {path.stat().st_mode & 0o777 for path in (directory, directory / "workers")} == {0o700}
        for path in files:
            entries = [urlsplit(url) for url in path.read_text().strip().split(",")]
            assert len(entries) == 2 and len({(entry.username, entry.password) for entry in entries}) == 1
            if path.name != "scaler-api.url":
                pika.BlockingConnection(pika.URLParameters(entries[0].geturl())).close()
        scaler_api = urlsplit((directory / "scaler-api.url").read_text().strip().split(",")[1])
        answer = httpx.get(f"{API}/queues", auth=(scaler_api.username, scaler_api.password), timeout=10)
        assert answer.status_code == 200
        before = {path: path.read_text() for path in files}
        assert ensure(directory, admin, nodes, prefix) == names
        assert {path: path.read_text() for path in files} == before, "a second run keeps every password"
    finally:
        delete(broker.api_url, [f"{prefix}-{name}" for name in ("producer", "scaler", "worker-sales", "worker-sleep")])


def test_a_type_without_its_broker_credential_is_not_started_and_says_why(tmp_path: Path) -> None:
    """With per-type credentials, a type added after `./manage.sh up` created them never falls back to the
    scaler's own broker user: the local backend's pre-start check names the missing file."""
    credentials = tmp_path / "workers"
    credentials.mkdir()
    (credentials / "known.url").write_text("amqp://autoscaler-worker-known:secret@localhost:5672/%2F\n")
    backend = LocalBackend(tmp_path / "state", LocalSettings(worker_credentials=credentials, templates=False))
    known, added = (
        JobType(name="known", queue="q1", handler="sleep"),
        JobType(name="added", queue="q2", handler="sleep"),
    )
    assert backend.check(known) is None
    assert backend.environment(known)["RABBITMQ_URLS"] == "amqp://autoscaler-worker-known:secret@localhost:5672/%2F"
    problem = backend.check(added)
    assert problem is not None and str(credentials / "added.url") in problem and "./manage.sh up" in problem


def test_a_rendered_worker_job_gets_its_types_broker_credential_and_no_other_secret() -> None:
    job_type = JobType(name="sales", queue="queue_sales")
    pod = render_job_manifest(job_type, settings=ClusterSettings())["spec"]["template"]["spec"]
    references = [
        item["valueFrom"]["secretKeyRef"]
        for container in pod["containers"]
        for item in container["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    ]
    assert references == [{"name": "rabbitmq-worker-sales", "key": "url"}]
    assert not any("secret" in volume for volume in pod["volumes"]) and pod["automountServiceAccountToken"] is False
