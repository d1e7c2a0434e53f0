"""Quorum queues per job type: config, declarations, RabbitMQ's delivery limit, a refused type change, end to end.

Everything runs against the real RabbitMQ (3.10+): the quorum arguments this
project declares (per-message expiration on the retry queue, at-least-once
dead-lettering, `x-delivery-limit`) are checked by what the broker does with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from common.config import ConfigError, JobsConfig, JobType, QueueType, default_queue_type, load_config, parse_config
from common.env import SettingsError
from common.handoff import JOB_TYPE_ENV
from common.outcomes import DEAD_OUTCOMES_QUEUE, LINE_HEADER, OUTCOMES_QUEUE, outcomes_queue_type
from common.queue_check import check_declarations
from common.queues import declare_queues, queue_arguments
from harness.broker import Broker, create_vhost, delete_vhost
from harness.processes import REPO, free_port
from harness.stack import Stack
from harness.waiting import wait_until
from scaler.backends.kubernetes_manifests import ClusterSettings, render_job_manifest
from scaler.queue_stats import QueueStatsSource
from tests.support.uploads import wait_record
from tests.test_k8s_manifests import infra_documents


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"queue_type": "quorom"}, "job type 'jt', field 'queue_type': Input should be 'classic' or 'quorum'"),
        ({"queue_type": 1}, "job type 'jt', field 'queue_type'"),
        ({"delivery_limit": 4}, "delivery_limit is a quorum queue's x-delivery-limit; it needs queue_type 'quorum'"),
        ({"queue_type": "quorum", "delivery_limit": 0}, "job type 'jt', field 'delivery_limit'"),
    ],
)
def test_bad_queue_settings_are_refused_naming_type_and_field(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^jobs.config.json: ") as refused:
        parse_config({"jt": {"queue": "q_jt", **settings}})
    assert message in str(refused.value)


def test_queue_type_settings_default_and_fail_clearly() -> None:
    assert default_queue_type({}) is QueueType.CLASSIC
    assert outcomes_queue_type({"QUEUE_TYPE": "quorum"}) is QueueType.QUORUM
    assert outcomes_queue_type({"QUEUE_TYPE": "quorum", "OUTCOMES_QUEUE_TYPE": "classic"}) is QueueType.CLASSIC
    with pytest.raises(SettingsError, match="OUTCOMES_QUEUE_TYPE='stream' is not a queue type: use quorum or classic"):
        outcomes_queue_type({"OUTCOMES_QUEUE_TYPE": "stream"})
    job_type = parse_config({"jt": {"queue": "q_jt", "queue_type": "quorum", "max_attempts": 4}}).get("jt")
    assert job_type.effective_delivery_limit == 6, "max_attempts + DELIVERY_LIMIT_MARGIN"


def test_kubernetes_deploys_quorum_queues_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer and the scaler must agree on QUEUE_TYPE; the scaler hands the resolved type to its workers."""
    deployments = {d["metadata"]["name"]: d for d in infra_documents() if d["kind"] == "Deployment"}
    for name in ("producer", "scaler"):
        env = {
            item["name"]: item.get("value")
            for item in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["QUEUE_TYPE"] == "quorum", name
    monkeypatch.setenv("QUEUE_TYPE", "quorum")
    job_type = load_config(REPO / "jobs.config.json").get("sleep")
    manifest = render_job_manifest(job_type, settings=ClusterSettings())
    env = {item["name"]: item.get("value") for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env[JOB_TYPE_ENV])["queue_type"] == "quorum"


def quorum_type(**settings) -> JobType:
    return JobType(name="jt", queue=f"q_{uuid.uuid4().hex[:8]}", queue_type="quorum", **settings)


def test_the_delivery_limit_dead_letters_a_message_with_its_headers(broker: Broker) -> None:
    """RabbitMQ's second line of defence: requeued past `delivery_limit`, a row goes to `.dead`, headers kept."""
    job_type = quorum_type(max_attempts=1)  # delivery limit 3
    with broker.channel() as channel:
        declare_queues(channel, job_type)
        channel.confirm_delivery()
        channel.basic_publish("", job_type.queue, b"{}", pika.BasicProperties(headers={LINE_HEADER: 7}))
        deliveries = 0
        while (method := channel.basic_get(job_type.queue)[0]) is not None or deliveries == 0:
            if method is not None:
                deliveries += 1
                channel.basic_nack(method.delivery_tag, requeue=True)
    for name, arguments in queue_arguments(job_type).items():
        queue = broker.queue(name)
        assert (queue["type"], queue["arguments"]) == ("quorum", arguments)
    assert broker.queue(job_type.queue)["arguments"]["x-delivery-limit"] == 3
    assert deliveries == 4, "delivered limit + 1 times, then dead-lettered"
    dead = wait_until(lambda: broker.drain(job_type.dead_queue), what="the row in .dead")
    headers = dead[0][0].headers
    assert headers[LINE_HEADER] == 7 and headers["x-death"][0]["reason"] == "delivery_limit", headers


def test_changing_a_queue_type_is_refused_with_how_to_migrate(broker: Broker) -> None:
    classic = JobType(name="jt", queue=f"q_{uuid.uuid4().hex[:8]}", queue_type="classic")
    with broker.channel() as channel:
        declare_queues(channel, classic)
    quorum = classic.model_copy(update={"queue_type": QueueType.QUORUM})
    declared = QueueStatsSource((broker.api_url,), broker.amqp_url).declared()
    with pytest.raises(ConfigError) as refused:
        check_declarations(parse_config({"jt": quorum.model_dump(mode="json", exclude={"name"})}), declared)
    message = str(refused.value)
    for part in (
        f"job type 'jt': queue '{classic.queue}' is a classic queue on the broker, the config asks for "
        "queue_type 'quorum'; RabbitMQ cannot change a queue's type, to migrate: stop uploads of 'jt'",
        "delete the three queues",
        f"'{classic.retry_queue}'",
        f"'{classic.dead_queue}'",
    ):
        assert part in message
    with broker.channel() as channel, pytest.raises(pika.exceptions.ChannelClosedByBroker) as declaring:
        declare_queues(channel, quorum)
    assert "RabbitMQ refused to declare queue" in str(declaring.value) and "to migrate" in str(declaring.value)


def test_a_quorum_types_max_attempts_edit_is_refused_unless_its_delivery_limit_is_kept(broker: Broker) -> None:
    """The delivery limit is a queue argument RabbitMQ cannot change, derived from max_attempts by default."""
    declared_type = quorum_type(max_attempts=3)
    with broker.channel() as channel:
        declare_queues(channel, declared_type)
    declared = QueueStatsSource((broker.api_url,), broker.amqp_url).declared()

    def config(**settings) -> JobsConfig:
        return parse_config({"jt": {**declared_type.model_dump(mode="json", exclude={"name"}), **settings}})

    with pytest.raises(ConfigError, match="x-delivery-limit: 5 on the broker, 6 in the config"):
        check_declarations(config(max_attempts=4), declared)
    check_declarations(config(max_attempts=4, delivery_limit=5), declared)


@pytest.fixture()
def quorum_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack on a vhost of its own (the report queues are quorum here, classic in the session's vhost)."""
    own = create_vhost()
    settings = {
        "handler": "tests.handlers.recorder",
        "queue_type": "quorum",
        "threshold": 1,
        "max_workers": 1,
        "idle_seconds": 2,
        "max_attempts": 2,
        "retry_delay_seconds": 0.2,
        "env": {"RECORD_FILE": str(tmp_path / "record.jsonl")},
    }
    stack = Stack(own, tmp_path, {"rec": settings}, env={"OUTCOMES_QUEUE_TYPE": "quorum"})
    stack.start()
    yield stack
    stack.stop()
    delete_vhost(own)


def test_a_quorum_type_end_to_end_retries_dead_letters_replays_and_refuses_a_type_change(
    quorum_stack: Stack,
) -> None:
    stack, broker = quorum_stack, quorum_stack.broker
    upload_id = stack.upload(b"n,fail_until\n1,0\n2,99\n3,0\n4,99\n", "rec").json()["upload_id"]
    done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the upload to end", timeout=60)
    assert (done["succeeded"], done["dead"]) == (2, 2)
    queue = stack.queue_of("rec")
    for name in (queue, f"{queue}.retry", f"{queue}.dead", OUTCOMES_QUEUE, DEAD_OUTCOMES_QUEUE):
        assert broker.queue(name)["type"] == "quorum", name
    dead = sorted(broker.drain(f"{queue}.dead"), key=lambda message: message[0].headers[LINE_HEADER])
    assert [properties.headers[LINE_HEADER] for properties, _ in dead] == [3, 5]
    for properties, body in dead:
        headers = properties.headers
        assert headers["upload_id"] == upload_id and headers["x-attempts"] == 2, headers
        assert "planned failure on attempt 2" in headers["x-error"] and headers["x-original-queue"] == queue
        assert "x-death" not in headers, "a confirmed copy the worker published, not a message RabbitMQ dead-lettered"
        assert json.loads(body)["fail_until"] == "99"

    replayed = stack.post(f"{stack.producer_url}/uploads/{upload_id}/replay", timeout=60).json()["replayed"]
    assert replayed == 2
    again = wait_record(stack, upload_id, lambda r: r["state"] == "done" and r["replays"] == 1, "the replay to end")
    assert (again["succeeded"], again["dead"], again["pending"]) == (2, 2, 0)

    config = stack.config()
    config["rec"]["queue_type"] = "classic"
    stack.config_path.write_text(json.dumps(config))
    refused = wait_until(
        lambda: stack.status()["config"]["error"], what="the scaler to refuse the queue type change", timeout=20
    )
    assert f"queue '{queue}' is a quorum queue on the broker, the config asks for queue_type 'classic'" in refused
    assert "to migrate" in refused and stack.type_status("rec"), "the old config stays in force"
    answer = stack.upload(b"n,fail_until\n1,0\n", "rec")
    assert answer.status_code == 503 and "RabbitMQ refused to declare queue" in answer.text, answer.text
    assert "as a classic queue" in answer.text and "to migrate" in answer.text

    started = subprocess.run(
        [sys.executable, "-m", "scaler", "--backend", "local"],
        env={**os.environ, **stack.env, "SCALER_PORT": str(free_port()), "SCALER_STATE_DIR": str(stack.directory)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2 and "scaler: cannot start:" in started.stderr
    assert f"queue '{queue}' is a quorum queue on the broker" in started.stderr
