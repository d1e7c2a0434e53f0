"""Read upload records over the producer's HTTP API in tests, and wait on them."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from harness.stack import Stack
from harness.waiting import wait_until


def record(stack: Stack, upload_id: str) -> dict[str, Any]:
    response = stack.get(f"{stack.producer_url}/uploads/{upload_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def rows_published(stack: Stack, job_type: str) -> float:
    """The producer's own count of rows it published for `job_type` since it started (0 before the first)."""
    metrics = stack.get(f"{stack.producer_url}/metrics", timeout=10).text
    found = re.search(rf'^producer_rows_published_total{{job_type="{job_type}"}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_record(
    stack: Stack, upload_id: str, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = 30
) -> dict[str, Any]:
    """The first record for which `predicate` holds; on timeout, fail with the last record and the producer's log."""
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        last.update(record(stack, upload_id))
        return dict(last) if predicate(last) else None

    try:
        return wait_until(check, timeout=timeout, interval=0.1, what=what)
    except AssertionError as error:
        log = stack.producer.log()[-3000:] if stack.producer else ""
        raise AssertionError(f"{error}\nrecord: {last}\nproducer log:\n{log}") from None


def interrupted_upload(
    stack: Stack,
    body: bytes,
    job_type: str,
    key: str,
    publishing: Callable[[], bool],
    fail: Callable[[], None],
    recover: Callable[[], None],
    timeout: float = 120,
    survivable: bool = False,
) -> tuple[dict[str, Any], str]:
    """Upload `body` with the Idempotency-Key `key`; once `publishing()` holds, `fail()` the broker; expect a 503
    (or, when the failure is `survivable`, such as one node of a cluster dying, a 200 too: then nothing is
    retried); `recover()`; retry the same file with the same key until it is accepted. Returns (the first
    answer's body and status, upload id) after checking that the retry finished the same upload."""
    headers = {"Idempotency-Key": key}
    answer: dict[str, Any] = {}

    def first_try() -> None:
        response = stack.upload(body, job_type, timeout=300, headers=headers)
        answer.update(status=response.status_code, **response.json())

    thread = threading.Thread(target=first_try)
    thread.start()
    wait_until(publishing, timeout=60, interval=0.02, what="publishing under way")
    assert not answer, f"the upload was answered before the failure: {answer}"
    fail()
    thread.join(120)
    if survivable and answer.get("status") == 200:
        return answer, answer["upload_id"]
    assert answer.get("status") == 503 and 0 < answer["confirmed"], answer
    recover()
    retry = wait_until(
        lambda: (lambda r: r if r.status_code == 200 else None)(stack.upload(body, job_type, headers=headers)),
        timeout=timeout,
        interval=1,
        what="the retry with the same key to be accepted",
    )
    assert retry.json()["upload_id"] == answer["upload_id"], "the same key is the same upload"
    return answer, answer["upload_id"]
