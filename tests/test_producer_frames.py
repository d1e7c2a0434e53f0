"""The producer writes each row's frames itself: they must be exactly what pika's basic_publish sends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pika
import pytest
from pika import frame, spec

from common.outcomes import LINE_HEADER, MAX_LINE
from harness.broker import Broker
from harness.stack import Stack
from producer.properties import RowFrames

FRAME_MAX = 4096
BODY_MAX = FRAME_MAX - spec.FRAME_HEADER_SIZE - spec.FRAME_END_SIZE


def pika_frames(channel: int, queue: str, upload_id: str, row: int, line: int, body: bytes) -> bytes:
    """What `channel.basic_publish` marshals for the producer's row, frame by frame, as pika does it."""
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        headers={"upload_id": upload_id, LINE_HEADER: line},
        message_id=f"{upload_id}:{row}",
        timestamp=1_700_000_000,
        type="sales",
        app_id="queue-autoscaler-producer",
    )
    frames = [
        frame.Method(channel, spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)).marshal(),
        frame.Header(channel, len(body), properties).marshal(),
    ]
    frames += [frame.Body(channel, body[start : start + BODY_MAX]).marshal() for start in range(0, len(body), BODY_MAX)]
    return b"".join(frames)


@pytest.mark.parametrize("size", [2, BODY_MAX - 1, BODY_MAX, BODY_MAX + 1, 3 * BODY_MAX + 17])
@pytest.mark.parametrize(("row", "line"), [(1, 2), (9, 18), (10, 11), (1_000_000, 2_000_001), (5, MAX_LINE)])
def test_row_frames_are_byte_for_byte_pikas(size: int, row: int, line: int) -> None:
    body = (b'{"k":"' + "é".encode() * size)[:size]
    frames = RowFrames(7, "queue_sales_x", "sales", "0123abcd", 1_700_000_000, FRAME_MAX)
    parts: list[bytes] = []
    frames.add(parts, row, line, body)
    assert b"".join(parts) == pika_frames(7, "queue_sales_x", "0123abcd", row, line, body)


@pytest.fixture()
def stack(broker: Broker, tmp_path) -> Iterator[Stack]:
    stack = Stack(broker, tmp_path, {"sales": {}}, env={"PRODUCER_PUBLISH_WINDOW": "3"})
    stack.start_producer()
    yield stack
    stack.stop()


def test_rows_larger_than_a_frame_and_a_window_arrive_whole_and_in_order(stack: Stack, broker: Broker) -> None:
    """Rows of 300 KB span several body frames (frame_max is 128 KiB); a window of 3 makes the pump refill often."""
    rows = [{"n": str(number), "blob": chr(0x41 + number % 26) * 300_000} for number in range(12)]
    csv = "n,blob\n" + "".join(f"{row['n']},{row['blob']}\n" for row in rows)
    response = stack.upload(csv.encode(), "sales")
    assert response.status_code == 200, response.text
    messages = broker.drain(stack.queue_of("sales"))
    assert [json.loads(body) for _, body in messages] == rows
    upload_id = response.json()["upload_id"]
    assert [properties.message_id for properties, _ in messages] == [f"{upload_id}:{n}" for n in range(1, 13)]
