"""Uploads whose rows no worker can take say so (`orphaned`, with the reason), and stop saying so when that ends.

A real producer over a real broker; no scaler runs, so an upload stays
`queued` and only the cause under test can change what it shows: its job
type taken out of the jobs config (and put back), its queue deleted on the
broker (and declared again).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import load_config
from common.queues import declare_queues
from harness.broker import Broker
from harness.stack import Stack
from tests.support.uploads import wait_record

CSV = b"Date,Item Description,Quantity,Amount\n2024-01-01,tea,1,2.50\n2024-01-02,cake,2,4.00\n"


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(
        broker, tmp_path, {"sales": {"default": True}, "sleep": {}}, env={"PRODUCER_HEALTH_INTERVAL_SECONDS": "0.2"}
    )
    created.start_producer()
    yield created
    created.stop()


def queued_upload(stack: Stack) -> str:
    response = stack.upload(CSV, "sleep")
    assert response.status_code == 200, response.text
    upload_id = response.json()["upload_id"]
    wait_record(stack, upload_id, lambda r: r["state"] == "queued" and r["orphaned_reason"] is None, "queued")
    return upload_id


def listed(stack: Stack, upload_id: str) -> dict:
    uploads = stack.get(f"{stack.producer_url}/uploads", timeout=10).json()["uploads"]
    return next(item for item in uploads if item["id"] == upload_id)


def test_an_upload_of_a_type_removed_from_the_config_is_orphaned_until_the_type_is_back(stack: Stack) -> None:
    upload_id = queued_upload(stack)
    config = stack.config()
    stack.config_path.write_text(json.dumps({"sales": config["sales"]}))

    orphaned = wait_record(stack, upload_id, lambda r: r["state"] == "orphaned", "orphaned")
    assert "job type 'sleep' is no longer in the jobs config" in orphaned["orphaned_reason"]
    assert listed(stack, upload_id)["state"] == "orphaned", "the list says so too"
    assert orphaned["pending"] == 2, "the counts are the record's own"

    stack.config_path.write_text(json.dumps(config, indent=4))
    wait_record(stack, upload_id, lambda r: r["state"] == "queued" and r["orphaned_reason"] is None, "queued again")


def test_an_upload_whose_queue_was_deleted_is_orphaned_until_the_queue_is_declared_again(
    stack: Stack, broker: Broker
) -> None:
    upload_id = queued_upload(stack)
    queue = stack.queue_of("sleep")
    with broker.channel() as channel:
        channel.queue_delete(queue)

    orphaned = wait_record(stack, upload_id, lambda r: r["state"] == "orphaned", "orphaned")
    assert f"queue {queue!r} of job type 'sleep' no longer exists on the broker" in orphaned["orphaned_reason"]

    with broker.channel() as channel:
        declare_queues(channel, load_config(stack.config_path).job_types["sleep"])
    wait_record(stack, upload_id, lambda r: r["state"] == "queued" and r["orphaned_reason"] is None, "queued again")
