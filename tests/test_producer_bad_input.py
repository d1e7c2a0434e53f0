"""Every kind of bad upload gets a clear 4xx JSON error, and nothing reaches the queue."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pika
import pytest

from common.config import JobType
from common.queues import declare_queues
from harness.broker import Broker
from harness.stack import DEFAULT_TOKEN, Stack

TYPES = {
    "sales": {"default": True},
    "sleep": {},
    "checked": {"columns": ["Date", "Item Description", "Quantity", "Amount"]},
}
MAX_UPLOAD = 12 * 1024 * 1024
HEADER = b"Date,Item Description,Quantity,Amount\n"


@dataclass
class Case:
    name: str
    status: int
    fragments: list[str]
    body: bytes = b""
    path: str = "/submit/sales"
    content_type: str = "text/csv"
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("not UTF-8", 415, ["line 2", "not UTF-8", "0xe9"], HEADER + "2024-01-01,Café,1,2\n".encode("latin-1")),
    Case("UTF-16 with BOM", 415, ["UTF-16"], (HEADER + b"2024-01-01,x,1,2\n").decode().encode("utf-16")),
    Case("PNG renamed .csv", 415, ["PNG image"], b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))),
    Case("empty file", 422, ["empty"], b""),
    Case("header only", 422, ["no data rows"], HEADER),
    Case(
        "duplicate header names",
        422,
        ["line 1", "'Amount' twice", "columns 4 and 5"],
        b"Date,Item,Quantity,Amount,Amount\n1,2,3,4,5\n",
    ),
    Case("empty header name", 422, ["line 1", "column 2"], b"Date,,Quantity\n1,2,3\n"),
    Case("ragged row", 422, ["line 3", "3 fields", "header has 4"], HEADER + b"a,b,c,d\na,b,c\n"),
    Case("unterminated quote", 422, ["line 2", "never closed"], HEADER + b'a,"b,c,d\ne,f,g,h\n'),
    Case("NUL byte", 422, ["line 3", "NUL"], HEADER + b"a,b,c,d\na,b\x00,c,d\n"),
    Case(
        "10 MB single field", 422, ["line 2", "longer than the limit"], HEADER + b"a," + b"x" * 10_000_000 + b",1,2\n"
    ),
    Case(
        "a million columns",
        422,
        ["line 2", "1000001 fields", "PRODUCER_MAX_COLUMNS"],
        HEADER + b"," * 1_000_000 + b"\n",
    ),
    Case(
        "a 7 MB header",
        422,
        ["line 1", "header is longer than the limit", "PRODUCER_MAX_HEADER_BYTES"],
        b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n" + b"1\n",
    ),
    Case(
        "header does not match the type's columns",
        422,
        ["line 1", "no column 'Quantity'", "'Quantity '", "check spaces and case"],
        b"Date,Item Description,Quantity ,Amount\n2024-01-01,x,1,2\n",
        path="/submit/checked",
    ),
    Case("unknown job type", 404, ["unknown job type 'nope'", "sales"], HEADER + b"a,b,c,d\n", path="/submit/nope"),
    Case(
        "job type with path characters",
        400,
        ["not a job type name"],
        HEADER + b"a,b,c,d\n",
        path="/submit/..%2F..%2Fetc%2Fpasswd",
    ),
    Case(
        "job type field with path characters",
        400,
        ["not a job type name"],
        path="/upload",
        content_type="",
        files=[("file", ("x.csv", HEADER + b"a,b,c,d\n", "text/csv"))],
        data={"job_type": "../sales"},
    ),
    Case(
        "missing file field",
        400,
        ["no file", "'file'"],
        path="/upload",
        content_type="",
        data={"job_type": "sales"},
        files=[("other", ("x.csv", HEADER + b"a,b,c,d\n", "text/csv"))],
    ),
    Case(
        "two file fields",
        400,
        ["two files"],
        path="/upload",
        content_type="",
        files=[
            ("file", ("x.csv", HEADER + b"a,b,c,d\n", "text/csv")),
            ("file", ("y.csv", HEADER + b"a,b,c,d\n", "text/csv")),
        ],
    ),
    Case(
        "wrong content type (JSON)", 415, ["application/json", "text/csv"], b'{"a": 1}', content_type="application/json"
    ),
    Case(
        "raw body to the multipart-only endpoint", 415, ["multipart/form-data"], HEADER + b"a,b,c,d\n", path="/upload"
    ),
    Case("oversize body", 413, ["PRODUCER_MAX_UPLOAD_BYTES"], HEADER + (b"a,b,c,d\n" * (MAX_UPLOAD // 8 + 10))),
    Case("Excel workbook renamed .csv", 415, ["ZIP archive", "xlsx"], b"PK\x03\x04" + b"\x00" * 100),
]


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        broker,
        tmp_path_factory.mktemp("bad-input"),
        TYPES,
        env={"PRODUCER_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "PRODUCER_BODY_TIMEOUT_SECONDS": "1"},
    )
    stack.start_producer()
    with broker.channel() as channel:
        for name in TYPES:
            declare_queues(channel, JobType(name=name, queue=stack.queue_of(name)))
    yield stack
    stack.stop()


def assert_nothing_queued(stack: Stack, broker: Broker) -> None:
    for name in TYPES:
        assert broker.queue_depth(stack.queue_of(name)) == 0, f"{name} queue is not empty"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_upload_is_refused_clearly_and_publishes_nothing(case: Case, stack: Stack, broker: Broker) -> None:
    url = f"{stack.producer_url}{case.path}"
    if case.files is not None:
        response = stack.post(url, files=case.files, data=case.data, timeout=60)
    else:
        response = stack.post(url, content=case.body, headers={"Content-Type": case.content_type}, timeout=60)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    for fragment in case.fragments:
        assert fragment in error
    assert_nothing_queued(stack, broker)


def test_chunked_body_over_the_limit_is_cut_off(stack: Stack, broker: Broker) -> None:
    def chunks() -> Iterator[bytes]:
        yield HEADER
        for _ in range(MAX_UPLOAD // (1 << 20) + 2):
            yield b"a,b,c,d\n" * (1 << 17)

    response = stack.post(
        f"{stack.producer_url}/submit/sales", content=chunks(), headers={"Content-Type": "text/csv"}, timeout=60
    )
    assert response.status_code == 413
    assert "PRODUCER_MAX_UPLOAD_BYTES" in response.json()["error"]
    assert_nothing_queued(stack, broker)


def raw_request(stack: Stack, head: str, body: bytes, hold_open: bool) -> tuple[int, str]:
    """Send a hand-made request (what httpx will not send) and read the answer."""
    with socket.create_connection(("127.0.0.1", stack.producer_port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        if not hold_open:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"}" in answer.split(b"\r\n\r\n", 1)[1]:
                break
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.split(b"\r\n\r\n", 1)[1].decode()


def test_declared_length_over_the_limit_with_short_body(stack: Stack, broker: Broker) -> None:
    head = f"POST /submit/sales HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {DEFAULT_TOKEN}\r\nContent-Type: text/csv\r\nContent-Length: {50 * 1024**3}"
    status, body = raw_request(stack, head, HEADER + b"a,b,c,d\n", hold_open=True)
    assert status == 413 and "declares 50 GiB" in body
    assert_nothing_queued(stack, broker)


def test_slow_drip_body_that_stops_times_out(stack: Stack, broker: Broker) -> None:
    head = f"POST /submit/sales HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {DEFAULT_TOKEN}\r\nContent-Type: text/csv\r\nContent-Length: 100000"
    status, body = raw_request(stack, head, HEADER + b"a,b,c,d\n", hold_open=True)
    assert status == 408 and "stalled" in body
    assert_nothing_queued(stack, broker)


def test_broker_is_still_fine_after_all_that(stack: Stack, broker: Broker) -> None:
    response = stack.upload(HEADER + b"a,b,c,d\n", "sales")
    assert response.status_code == 200
    assert broker.queue_depth(stack.queue_of("sales")) == 1
    broker.drain(stack.queue_of("sales"))
    with pika.BlockingConnection(pika.URLParameters(broker.amqp_url)):
        pass
