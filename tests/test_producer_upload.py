"""Uploads that should succeed: every row arrives exactly as written, with the contract's properties."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.outcomes import LINE_HEADER
from harness.broker import Broker
from harness.stack import Stack

TYPES = {"sales": {"threshold": 10, "default": True}, "sleep": {"threshold": 20}}


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(broker, tmp_path_factory.mktemp("producer"), TYPES)
    stack.start_producer()
    yield stack
    stack.stop()


def tricky_csv() -> tuple[bytes, list[dict[str, str]]]:
    """Quoted commas, doubled quotes, embedded newlines (both kinds), non-ASCII, empty fields."""
    rows = [
        {"Date": "2024-01-01", "Item Description": "Widget, large", "Quantity": "3", "Amount": "12.50"},
        {"Date": "2024-01-02", "Item Description": 'He said "hi"', "Quantity": "1", "Amount": "€5,00"},
        {"Date": "2024-01-03", "Item Description": "line one\nline two\r\nline three", "Quantity": "", "Amount": "7"},
        {"Date": "2024-01-04", "Item Description": "Grüße 東京 🚀", "Quantity": "2", "Amount": " 1 "},
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode(), rows


def start_lines(body: bytes) -> list[int]:
    """The line each data row of a CSV file starts on (its fields may hold newlines)."""
    reader = csv.reader(io.StringIO(body.decode(), newline=""))
    starts = []
    while True:
        start = reader.line_num + 1
        if next(reader, None) is None:
            return starts[1:]
        starts.append(start)


def test_multipart_upload_delivers_every_row_exactly(stack: Stack, broker: Broker) -> None:
    body, rows = tricky_csv()
    response = stack.post(f"{stack.producer_url}/upload", files={"file": ("data.csv", body, "text/csv")}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["job_type"] == "sales" and answer["rows"] == len(rows)
    assert answer["queue"] == stack.queue_of("sales")

    messages = broker.drain(answer["queue"])
    assert [json.loads(body) for _, body in messages] == rows
    starts = start_lines(body)
    for number, (properties, _) in enumerate(messages, start=1):
        assert properties.delivery_mode == 2
        assert properties.content_type == "application/json"
        assert properties.message_id == f"{answer['upload_id']}:{number}"
        assert properties.type == "sales"
        assert properties.timestamp is not None and properties.timestamp > 0
        assert properties.headers == {"upload_id": answer["upload_id"], LINE_HEADER: starts[number - 1]}


def test_raw_body_submit_needs_text_csv(stack: Stack, broker: Broker) -> None:
    body, rows = tricky_csv()
    # A form-encoded or text/plain body is what a web page can send cross-site without a preflight: refused.
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        refused = stack.post(
            f"{stack.producer_url}/submit/sleep", content=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert refused.status_code == 415 and "text/csv" in refused.json()["error"]
    response = stack.post(
        f"{stack.producer_url}/submit/sleep", content=body, headers={"Content-Type": "text/csv"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == len(rows)
    assert broker.drain_json(stack.queue_of("sleep")) == rows


def test_upload_form_job_type_field_and_submit_multipart(stack: Stack, broker: Broker) -> None:
    body = b"a,b\n1,2\n3,4\n"
    first = stack.post(f"{stack.producer_url}/upload", files={"file": ("x.csv", body)}, data={"job_type": "sleep"})
    second = stack.post(f"{stack.producer_url}/submit/sleep", files={"file": ("x.csv", body)})
    assert first.status_code == second.status_code == 200
    assert broker.drain_json(stack.queue_of("sleep")) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}] * 2


def test_utf8_bom_is_stripped_and_blank_lines_skipped(stack: Stack, broker: Broker) -> None:
    response = stack.upload(b"\xef\xbb\xbfname,n\n\nx,1\n\ny,2", "sleep")
    assert response.status_code == 200, response.text
    assert broker.drain_json(stack.queue_of("sleep")) == [{"name": "x", "n": "1"}, {"name": "y", "n": "2"}]


def test_job_types_health_and_metrics(stack: Stack, broker: Broker) -> None:
    types = stack.get(f"{stack.producer_url}/job-types").json()
    assert types["default"] == "sales"
    assert set(types["job_types"]) == {"sales", "sleep"}
    health = stack.get(f"{stack.producer_url}/healthz").json()
    assert health["broker"]["reachable"] is True and health["broker"]["node"] == "127.0.0.1:5672"

    stack.upload(b"a\n1\n2\n3\n", "sleep").raise_for_status()
    assert len(broker.drain(stack.queue_of("sleep"))) == 3
    metrics = stack.get(f"{stack.producer_url}/metrics").text
    assert 'producer_rows_published_total{job_type="sleep"}' in metrics
    assert 'producer_uploads_total{outcome="ok"}' in metrics
    assert "producer_upload_duration_seconds_bucket" in metrics
    log = stack.producer.log()
    assert "type=sleep" in log and "rows=3" in log


def test_config_edit_is_picked_up_without_restart(stack: Stack, broker: Broker) -> None:
    data = stack.config()
    data["extra"] = {"queue": f"{data['sleep']['queue']}_extra"}
    stack.config_path.write_text(json.dumps(data))
    try:
        response = stack.upload(b"a\n1\n", "extra")
        assert response.status_code == 200, response.text
        assert broker.drain_json(data["extra"]["queue"]) == [{"a": "1"}]
    finally:
        del data["extra"]
        stack.config_path.write_text(json.dumps(data))


def test_large_upload_is_counted_exactly(stack: Stack, broker: Broker, tmp_path: Path) -> None:
    rows = 20_000
    lines = ["Date,Item Description,Quantity,Amount"] + [f"2024-01-01,Item {i},{i % 7},{i}.25" for i in range(rows)]
    response = stack.upload("\n".join(lines).encode(), "sleep")
    assert response.status_code == 200, response.text
    queue = stack.queue_of("sleep")
    assert broker.queue_depth(queue) == rows
    bodies = broker.drain_json(queue)
    assert bodies[0]["Item Description"] == "Item 0" and bodies[-1]["Item Description"] == f"Item {rows - 1}"
